"""Bad input is one clear error: from the CLI, one line ``error: …`` on stderr, exit status 2, no traceback;
from Python, a ``LayerwiseError``. The classes of bad input covered:

- ``--out``: an existing file, a folder below a file, ``truncate``'s own source or a folder inside it, a folder
  holding files a fresh ``train`` did not write (unless ``--overwrite``)
- flags: values out of range, non-finite or unknown (batch size, sample cap, repeats, device, dtype, exit
  threshold, ``train`` options, fp16 on CPU); mistyped, missing or unknown flags
- ``train --config`` YAML: wrong types, unknown keys, not UTF-8
- model folders: a ``config.json`` or ``layerwise.json`` that is not a JSON object, names an unknown
  architecture, or has an unknown key or a mistyped value
- data (issue 12): a table without the needed columns or naming a missing one, a label outside a GLUE task's
  set, a real-valued label for a classifier, a task folder that matches no GLUE layout; ``exit`` on a
  regression head
- data: files that are not UTF-8 (text corpus, tinyshakespeare, GLUE TSV, wikitext-2); TSV rows with a
  negative or non-integer label or a missing field; labels outside the model's classes; NaN/Inf images and
  float labels (Python)
- ``connect``: two models of different architectures or tensor layouts (the error names the group), an α
  outside [0, 1], an unknown mode, data the models cannot read, weight matching without declared units
- ``report``: a folder that does not exist or holds no run; ``--out`` a folder, or a file it did not write
- resuming ``train``: a checkpoint without its position or scheduler state, a planted pickle (never
  unpickled), ``latest.json`` pointing outside the run; a corrupt line in ``log.jsonl`` (Python)

``test_bad_input_is_one_line_error`` runs each CLI case in its own child process, in a folder the case builds;
one module fixture starts them all, a few at a time. ``test_bad_input_raises`` covers the Python API. The plain
tests after them check what a refused or repeated run leaves in its folder, and that checkpoints run no code.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures import CLI, run_children, subprocess_env, train_config, train_flags

from layerwise.checkpoints import load_model, save_model
from layerwise.data import LayerwiseDataset, load_dataset
from layerwise.errors import LayerwiseError
from layerwise.inference import POLICIES, make_policy
from layerwise.training import resolve_config, train
from layerwise.training.checkpointing import read_rng, rng_state, save_rng, set_rng_state
from layerwise.training.log import read_log

TINY = {"limit": 64, "eval_limit": 32}  # a train run of two steps an epoch
TSV_HEADER = b"sentence\tlabel\n"
NOT_UTF8 = "is not UTF-8: byte 0x{:02x} at offset {} \\(line {}\\) cannot be decoded: re-save the file as UTF-8"


def naming(*words: str) -> str:
    """A regex for a line that names every one of ``words``, in any order (one line names every bad key)."""
    return "".join(f"(?=.*{re.escape(word)})" for word in words)


# ---------------------------------------------------------------- case folders


@functools.cache
def _saved_once(shared: Path, name: str) -> Path:
    return save_model(load_model(name), shared / name)


@functools.cache
def _trained_once(shared: Path) -> Path:
    train(train_config(shared, "finished", **TINY))
    return shared / "finished"


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` and its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@dataclass(frozen=True)
class Folder:
    """A case's own empty folder ``path``, and copies of what several cases start from, made once in ``shared``."""

    path: Path
    shared: Path

    def model(self, name: str = "mlp-residual") -> Path:
        """``name`` saved as a model folder, at ``path/model``."""
        return shutil.copytree(_saved_once(self.shared, name), self.path / "model")

    def finished_run(self) -> Path:
        """A finished ``train`` run of ``train_flags(path/"run", **TINY)``, at ``path/run``."""
        return shutil.copytree(_trained_once(self.shared), self.path / "run")

    def write(self, name: str, content: bytes | str) -> Path:
        return _write(self.path / name, content)

    def tsv_like(self, name: str, rows: bytes) -> Path:
        """A folder ``name`` whose train.tsv and dev.tsv hold ``rows``."""
        self.write(f"{name}/train.tsv", rows)
        return self.write(f"{name}/dev.tsv", rows).parent

    def tsv_task(self, dev: bytes, train: bytes = b"fine\t1\n", name: str = "task") -> Path:
        """A GLUE-style task folder; the default split of ``analyze`` (test, absent here) reads dev.tsv."""
        self.write(f"{name}/train.tsv", TSV_HEADER + train)
        return self.write(f"{name}/dev.tsv", TSV_HEADER + dev).parent


@dataclass(frozen=True)
class Case:
    """``build`` writes the case's files into its folder and returns the ``layerwise`` arguments; the one error
    line must match the regex ``message``; ``after`` checks the folder once the run has failed."""

    build: Callable[[Folder], list[str]]
    message: str
    after: Callable[[Folder], None] | None = None


# ---------------------------------------------------------------- case builders


def _missing(f: Folder) -> str:
    """A model that does not exist: an error about something else must come from a check made before loading."""
    return str(f.path / "no-such-model")


def _flags(command: str, *flags: str) -> Callable[[Folder], list[str]]:
    """``command`` with ``flags`` and a missing model: the flags must be rejected before any loading."""

    def build(f: Folder) -> list[str]:
        pair = ["--model-a", _missing(f), "--model-b", _missing(f)]
        models = {"compare": pair, "connect": pair,
                  "truncate": ["--model", _missing(f), "--k", "1"]}.get(command, ["--model", _missing(f)])
        data = ["--data", "digits"] if command in ("analyze", "compare", "exit", "connect") else []
        # generate writes only with --sweep, and refuses an --out it would ignore
        writes = command != "generate" or "--sweep" in flags
        out = [] if "--out" in flags or not writes else ["--out", str(f.path / "out")]
        return [command, *models, *data, *out, *flags]

    return build


def _out(command: str, under_file: bool) -> Callable[[Folder], list[str]]:
    """``--out`` an existing file, or a folder below one (unwritable even for root, unlike chmod)."""

    def build(f: Folder) -> list[str]:
        taken = f.write("taken", "not a folder\n")
        return _flags(command, "--out", str(taken / "sub" if under_file else taken))(f)

    return build


def _truncate_onto_source(inside: bool) -> Callable[[Folder], list[str]]:
    def build(f: Folder) -> list[str]:
        source = f.model()
        out = source / "cut" if inside else source / ".." / source.name  # another spelling of the same folder
        return ["truncate", "--model", str(source), "--k", "2", "--out", str(out)]

    return build


def _source_unchanged(f: Folder) -> None:
    assert _tree(f.path / "model") == _tree(_saved_once(f.shared, "mlp-residual")), "truncate changed its source"


def _train_out_is_file(f: Folder) -> list[str]:
    return train_flags(f.write("run", "not a folder"), **TINY)


def _train_out_has_foreign_file(f: Folder) -> list[str]:
    return train_flags(f.write("run/notes.txt", "mine").parent, **TINY)


def _train(*flags: str) -> Callable[[Folder], list[str]]:
    return lambda f: ["train", *flags, "--out", str(f.path / "run"), "--cpu", "--no-progress"]


def _yaml(text: bytes | str) -> Callable[[Folder], list[str]]:
    return lambda f: ["train", "--config", str(f.write("c.yaml", text)), "--out", str(f.path / "run")]


def _corrupt(name: str, file: str, change: Callable[[dict], object], command: str = "analyze"):
    """A saved ``name`` whose ``file`` is rewritten by ``change``, run through ``command``."""

    def build(f: Folder) -> list[str]:
        model = f.model(name)
        (model / file).write_text(json.dumps(change(json.loads((model / file).read_text()))))
        data = "digits" if name.startswith("mlp") else "sentences"
        return [command, "--model", str(model), "--data", data, "--limit", "16", "--out", str(f.path / "out")]

    return build


def _analyze(model: str, data: Callable[[Folder], Path | list[str]]) -> Callable[[Folder], list[str]]:
    """``analyze`` of ``model`` on what ``data`` writes: a path, or the ``--data`` arguments."""

    def build(f: Folder) -> list[str]:
        given = data(f)
        given = given if isinstance(given, list) else [str(given)]
        return ["analyze", "--model", model, "--data", *given, "--out", str(f.path / "out"), "--device", "cpu"]

    return build


def _connect(model_a: str, model_b: str, data: str | Callable[[Folder], Path], *flags: str):
    """``connect`` of two built-in models on ``data`` (a name, or a file the case writes)."""

    def build(f: Folder) -> list[str]:
        where = data if isinstance(data, str) else str(data(f))
        return ["connect", "--model-a", model_a, "--model-b", model_b, "--data", where, "--out", str(f.path / "out"),
                *flags]

    return build


def _corpus(f: Folder) -> Path:
    return f.write("corpus.txt", "To be, or not to be, that is the question.\n" * 20)


def _tinyshakespeare(f: Folder) -> list[str]:
    f.write("root/tinyshakespeare/input.txt", "Caf\u00e9 society\n".encode("latin-1"))
    return ["tinyshakespeare", "--data-dir", str(f.path / "root")]


def _label_outside_analyze(f: Folder) -> list[str]:
    model, task = f.model("bert-tiny"), f.tsv_task(b"good\t1\nbad\t0\nodd\t5\nfine\t1\n")
    return ["analyze", "--model", str(model), "--data", str(task), "--out", str(f.path / "out")]


def _label_outside_exit(f: Folder) -> list[str]:
    """The evaluated split is fine; the validation split, named, holds label 5 of a two-class model."""
    model, task = f.model("bert-tiny"), f.tsv_task(b"good\t1\nbad\t0\n" * 4, train=b"good\t1\nodd\t5\nbad\t0\n")
    return ["exit", "--model", str(model), "--data", str(task), "--val-split", "train", "--out", str(f.path / "out")]


def _label_outside_train(f: Folder) -> list[str]:
    """SST-2, a sentiment task, has the labels 0 and 1, so label 5 is refused as it is read."""
    rows = b"good\t1\nbad\t0\nodd\t5\nfine\t1\n"
    task = f.tsv_task(rows, train=rows, name="SST-2")
    return ["train", "--model", "bert-tiny", "--data", str(task), "--batch-size", "2", "--out", str(f.path / "run"),
            "--cpu", "--no-progress"]


def _rte_bad_label(f: Folder) -> Path:
    rows = b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n"
    f.write("RTE/train.tsv", rows)
    return f.write("RTE/dev.tsv", rows).parent


def _exit_regression(f: Folder) -> list[str]:
    """A saved bert-tiny with a one-output (regression) head: no confidence to exit on."""
    model = save_model(load_model("bert-tiny", num_classes=1), f.path / "model")
    rows = b"index\tsentence1\tsentence2\tscore\n" + b"".join(b"%d\ta\tb\t%d.5\n" % (i, i % 5) for i in range(8))
    f.write("STS-B/train.tsv", rows)
    data = f.write("STS-B/dev.tsv", rows).parent
    return ["exit", "--model", str(model), "--data", str(data), "--out", str(f.path / "out"), "--device", "cpu"]


def _resume(edit: Callable[[Path, Path], None]) -> Callable[[Folder], list[str]]:
    """The finished tiny run, changed by ``edit(run_folder, latest_checkpoint)``, run again (so resumed)."""

    def build(f: Folder) -> list[str]:
        run = f.finished_run()
        latest = json.loads((run / "checkpoint" / "latest.json").read_text())["dir"]
        edit(run, run / "checkpoint" / latest)
        return train_flags(run, **TINY)

    return build


def _drop_position(run: Path, ckpt: Path) -> None:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    del state["position"]
    (ckpt / "trainer_state.json").write_text(json.dumps(state))


def _drop_scheduler(run: Path, ckpt: Path) -> None:
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    del state["scheduler"]
    torch.save(state, ckpt / "optimizer.pt")


class PlantedPickle:
    """Unpickling this creates ``marker``: proof that a pickle from the run folder ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _plant_pickle(file: str) -> Callable[[Path, Path], None]:
    def edit(run: Path, ckpt: Path) -> None:
        torch.save(PlantedPickle(run.parent / "MARKER"), ckpt / file)

    return edit


def _pickle_never_ran(f: Folder) -> None:
    assert not (f.path / "MARKER").exists(), "a pickle from the run folder ran code"


def _point_latest_outside(run: Path, ckpt: Path) -> None:
    (run / "checkpoint" / "latest.json").write_text(json.dumps({"dir": "../../x", "step": 2, "epoch": 1}))


# ---------------------------------------------------------------- the CLI cases

def _lpft(model: str | Callable[[Folder], Path], data: str, *flags: str) -> Callable[[Folder], list[str]]:
    def build(f: Folder) -> list[str]:
        name = model if isinstance(model, str) else str(model(f))
        return ["lpft", "--model", name, "--data", data, "--ntk-subset", "8", *flags, "--out", str(f.path / "out"),
                "--device", "cpu", "--no-progress"]

    return build


def _report(out: Callable[[Folder], Path], folder: Callable[[Folder], Path] | None = None):
    """``report`` of ``folder`` (by default a run folder whose results.json names its command) into ``out``."""

    def build(f: Folder) -> list[str]:
        run = folder(f) if folder else f.write("run/results.json", '{"command": "exit", "models": []}').parent
        return ["report", str(run), "--out", str(out(f))]

    return build


def _foreign_page(f: Folder) -> Path:
    return f.write("notes.html", "<html>my notes</html>")


def _foreign_page_unchanged(f: Folder) -> None:
    assert (f.path / "notes.html").read_text() == "<html>my notes</html>"


def _regression_model(f: Folder) -> Path:
    """An own MLP with one output: a regression head."""
    return save_model(load_model("mlp-residual", num_classes=1), f.path / "regression")


def _nothing_trained(f: Folder) -> None:
    assert not any((f.path / "out").glob("*/*")), "lpft trained before refusing its input"


def _no_model_trained(f: Folder) -> None:
    assert not (f.path / "run" / "model.safetensors").exists(), "train trained before refusing its input"


def _classifier_exists(f: Folder) -> list[str]:
    """A model folder that already holds an exit classifier (a placeholder: it is refused before being read)."""
    model = f.model("gpt-tiny")
    f.write("model/exit_classifier.safetensors", b"mine")
    return ["train-exit-classifier", "--model", str(model), "--data", "tinyshakespeare"]


def _classifier_unchanged(f: Folder) -> None:
    assert (f.path / "model" / "exit_classifier.safetensors").read_bytes() == b"mine"
    assert not (f.path / "model" / "exit_classifier.json").exists()


CASES: dict[str, Case] = {
    # --out, checked before loading, in every command
    "analyze-out-is-file": Case(_out("analyze", False), r"--out .*taken is an existing file: pass a folder"),
    "compare-out-under-file": Case(_out("compare", True), r"--out .*taken/sub cannot be written"),
    "exit-out-is-file": Case(_out("exit", False), r"--out .*taken is an existing file"),
    "truncate-out-under-file": Case(_out("truncate", True), r"--out .*taken/sub cannot be written"),
    "truncate-out-is-source": Case(_truncate_onto_source(False), r"truncate never overwrites its source",
                                   _source_unchanged),
    "truncate-out-inside-source": Case(_truncate_onto_source(True), r"truncate never overwrites its source",
                                       _source_unchanged),
    "train-out-is-file": Case(_train_out_is_file, naming("existing file")),
    "train-out-has-foreign-file": Case(_train_out_has_foreign_file, naming("notes.txt", "overwrite")),
    # flag values, checked before loading
    "analyze-batch-size-zero": Case(_flags("analyze", "--batch-size", "0"),
                                    r"--batch-size: Input should be greater than 0"),
    "analyze-unknown-device": Case(_flags("analyze", "--device", "tpu"), r"unknown device 'tpu'"),
    "analyze-unknown-dtype": Case(_flags("analyze", "--dtype", "half"), r"--dtype: Input should be 'float32'"),
    "compare-sample-cap-zero": Case(_flags("compare", "--sample-cap", "0"),
                                    r"--sample-cap: Input should be greater than 0"),
    "connect-unknown-mode": Case(_flags("connect", "--mode", "single", "--mode", "diagonal"),
                                 r"unknown mode diagonal: use one or more of full, single, cumulative, random"),
    "connect-alpha-outside": Case(_flags("connect", "--alphas", "0,0.5,1.5"), naming("--alphas", "[0, 1]")),
    "connect-different-architectures": Case(_connect("mlp-plain", "gpt-tiny", "digits"),
                                            naming("different architectures", "MLP", "GPT")),
    "connect-different-shapes": Case(_connect("mlp-residual", "mlp-plain", "digits"),
                                     naming("differ in group readout", "norm.")),
    "connect-unreadable-data": Case(_connect("gpt-tiny", "gpt-tiny", "digits"), naming("digits", "text corpus")),
    "connect-match-undeclared": Case(_connect("gpt-tiny", "gpt-tiny", _corpus, "--match"),
                                     naming("weight matching", "GPT")),
    "exit-transfer-splits-one": Case(_flags("exit", "--transfer-data", "digits", "--transfer-splits", "train"),
                                     naming("--transfer-splits", "two split names")),
    "exit-shift-augment-not-images": Case(lambda f: ["exit", "--model", "bert-tiny", "--data", "sentences",
                                                     "--shift-augment", "--out", str(f.path / "out")],
                                          naming("--shift-augment", "text data", "--shift-data")),
    "exit-transfer-limit-zero": Case(_flags("exit", "--transfer-data", "digits", "--transfer-limit", "0"),
                                     r"--transfer-limit: Input should be greater than 0"),
    "generate-kv-fill-unknown": Case(_flags("generate", "--prompt", "x", "--early-exit", "--kv-fill", "copy"),
                                     r"--kv-fill: Input should be 'propagate' or 'recompute'"),
    "generate-min-layer-zero": Case(_flags("generate", "--prompt", "x", "--early-exit", "--min-layer", "0"),
                                    r"--min-layer: Input should be greater than 0"),
    "generate-threshold-nan": Case(_flags("generate", "--prompt", "x", "--early-exit", "--threshold", "nan"),
                                   naming("--threshold", "finite")),
    "generate-sweep-not-numbers": Case(_flags("generate", "--prompt", "x", "--early-exit", "--sweep", "0.5,high"),
                                       naming("--sweep", "finite thresholds")),
    "generate-exit-and-speculative": Case(_flags("generate", "--prompt", "x", "--early-exit", "--speculative"),
                                          naming("--early-exit", "--speculative")),
    "generate-sweep-without-exit": Case(_flags("generate", "--prompt", "x", "--sweep", "0.5"),
                                        naming("--sweep", "--early-exit")),
    # options that conflict, or that would be ignored: each names what it applies with
    "generate-speculative-with-layer": Case(_flags("generate", "--prompt", "x", "--speculative", "--layer", "1"),
                                            naming("--speculative", "--layer")),
    "generate-exit-layer-zero": Case(_flags("generate", "--prompt", "x", "--speculative", "--exit-layer", "0"),
                                     r"--exit-layer: Input should be greater than 0"),
    "generate-num-draft-without-speculative": Case(_flags("generate", "--prompt", "x", "--num-draft", "2"),
                                                   naming("--num-draft", "only applies with --speculative")),
    "generate-out-without-sweep": Case(_flags("generate", "--prompt", "x", "--out", "somewhere"),
                                       naming("--out", "only applies with --sweep")),
    "generate-threshold-without-early-exit": Case(_flags("generate", "--prompt", "x", "--threshold", "0.5"),
                                                  naming("--threshold", "only applies with --early-exit")),
    # issue 23: cheap exit signals, the reduced-vocabulary draft, the layer-sampled aligned loss
    "generate-check-every-zero": Case(_flags("generate", "--prompt", "x", "--early-exit", "--check-every", "0"),
                                      r"--check-every: Input should be greater than 0"),
    "generate-check-every-without-early-exit": Case(_flags("generate", "--prompt", "x", "--check-every", "2"),
                                                    naming("--check-every", "only applies with --early-exit")),
    "generate-draft-vocab-without-speculative": Case(_flags("generate", "--prompt", "x", "--draft-vocab", "10"),
                                                     naming("--draft-vocab", "only applies with --speculative")),
    "generate-classifier-policy-without-classifier": Case(
        lambda f: ["generate", "--model", str(f.model("gpt-tiny")), "--prompt", "x", "--early-exit", "--policy",
                   "classifier"], naming("holds no exit classifier", "train-exit-classifier", "--policy")),
    "generate-draft-vocab-without-counts": Case(
        lambda f: ["generate", "--model", str(f.model("gpt-tiny")), "--prompt", "x", "--speculative",
                   "--draft-vocab", "10"], naming("holds no token counts", "new-gpt", "save_token_counts")),
    "exit-check-every-zero": Case(_flags("exit", "--check-every", "0"), r"--check-every: Input should be greater than 0"),
    "train-aligned-layers-out-of-range": Case(
        _train("--model", "gpt-tiny", "--data", "tinyshakespeare", "--objective", "aligned", "--aligned-layers", "99",
               "--limit", "8", "--eval-limit", "2", "--seq-len", "16", "--batch-size", "4"),
        naming("--aligned-layers 99", "draw 1.."), after=_no_model_trained),
    "train-aligned-layers-standard-objective": Case(
        _train("--model", "gpt-tiny", "--data", "tinyshakespeare", "--objective", "standard", "--aligned-layers", "1"),
        naming("--aligned-layers", "'standard'", "aligned objective"), after=_no_model_trained),
    "train-aligned-layers-not-lm": Case(
        _train("--model", "mlp-residual", "--data", "digits", "--objective", "aligned", "--aligned-layers", "1",
               "--limit", "64", "--eval-limit", "32"),
        naming("--aligned-layers", "classification model"), after=_no_model_trained),
    "train-exit-classifier-exists": Case(_classifier_exists, naming("already holds an exit classifier", "--overwrite"),
                                         after=_classifier_unchanged),
    "train-exit-classifier-not-a-folder": Case(
        lambda f: ["train-exit-classifier", "--model", "gpt-tiny", "--data", "tinyshakespeare"],
        naming("--model gpt-tiny", "not a folder")),
    "analyze-text-column-not-table": Case(_flags("analyze", "--text-column", "sentence"),
                                          naming("--text-column", "table", "digits")),
    "analyze-probe-limit-without-probe": Case(_flags("analyze", "--no-probe", "--probe-limit", "10"),
                                              naming("--probe-limit", "only applies with --probe")),
    "analyze-pooling-vector-model": Case(lambda f: ["analyze", "--model", "mlp-residual", "--data", "digits",
                                                    "--limit", "16", "--pooling", "mean", "--out", str(f.path / "o")],
                                         naming("--pooling", "one vector per sample")),
    "exit-transfer-limit-without-transfer": Case(_flags("exit", "--transfer-limit", "10"),
                                                 naming("--transfer-limit", "only applies with --transfer-data")),
    "new-gpt-too-large": Case(lambda f: ["new-gpt", "--corpus", "tinyshakespeare", "--depth", "100000", "--dim",
                                         "65536", "--heads", "8", "--out", str(f.path / "o")],
                              naming("GiB", "--depth", "--dim")),
    "exit-repeats-zero": Case(_flags("exit", "--repeats", "0"), r"--repeats: Input should be greater than 0"),
    "exit-threshold-nan": Case(_flags("exit", "--policy", "patience", "--threshold", "nan"),
                               r"patience threshold nan is not a finite number"),
    "train-negative-or-non-finite": Case(
        _train("--weight-decay", "-0.1", "--warmup-steps", "-5", "--gamma", "nan", "--lr", "inf", "--cos-beta", "inf"),
        naming("weight_decay", "warmup_steps", "gamma", "lr", "cos_beta")),
    "train-non-positive": Case(
        _train("--checkpoint-every", "0", "--max-grad-norm", "-1", "--max-length", "0", "--depth", "0",
               "--batch-size", "0", "--grad-accum", "0", "--seq-len", "0"),
        naming("checkpoint_every", "max_grad_norm", "max_length", "depth", "batch_size", "grad_accum", "seq_len")),
    "train-unknown-choices": Case(_train("--objective", "nope", "--schedule", "nope", "--mixed-precision", "fp8",
                                         "--lm-loss", "fused"),
                                  naming("objective", "schedule", "mixed_precision", "lm_loss")),
    "train-fp16-on-cpu": Case(_train("--mixed-precision", "fp16"), naming("bf16 or no")),
    # usage errors from the command-line parser
    "analyze-fractional-batch-size": Case(_flags("analyze", "--batch-size", "2.5"), r"Invalid value for '--batch-size'"),
    "exit-missing-option": Case(lambda f: ["exit", "--data", "digits"], r"Missing option '--model'"),
    "truncate-unknown-option": Case(_flags("truncate", "--colour", "red"), r"No such option: --colour"),
    # train --config files
    "train-yaml-wrong-types": Case(
        _yaml("epochs: three\nmilestones: 5\nbatch_size: 64.5\naugment: sometimes\nlayer_weights: steep\n"
              "ft_objective: lp\nlp_cv: 1\n"),
        naming("epochs", "milestones", "batch_size", "augment", "layer_weights", "ft_objective", "lp_cv")),
    "train-yaml-unknown-key": Case(_yaml("epoch: 3\n"), naming("unknown keys epoch")),
    "train-yaml-not-utf8": Case(_yaml(b"epochs: 3\nmodel: \xff\xfe\n"), naming("UTF-8")),
    # model folders: config.json
    "model-config-not-object": Case(_corrupt("mlp-residual", "config.json", lambda c: [c]),
                                    r"config\.json holds a JSON list, not an object"),
    "model-config-unknown-own-arch": Case(
        _corrupt("mlp-residual", "config.json", lambda c: {**c, "layerwise_arch": "cnn"}),
        r"config\.json names layerwise_arch 'cnn': use one of"),
    "model-config-unknown-hf-arch": Case(
        _corrupt("bert-tiny", "config.json", lambda c: {**c, "architectures": ["Nope"]}),
        r"unknown architecture 'Nope' in .*config\.json"),
    "model-config-unknown-key": Case(_corrupt("mlp-residual", "config.json", lambda c: {**c, "colour": 3}, "exit"),
                                     r"config\.json: colour: Extra inputs are not permitted"),
    "model-config-mistyped-key": Case(_corrupt("mlp-residual", "config.json", lambda c: {**c, "depth": "eight"}),
                                      r"config\.json: depth: Input should be a valid integer \(got 'eight'\)"),
    "model-hf-config-mistyped-key": Case(_corrupt("bert-tiny", "config.json", lambda c: {**c, "hidden_size": "big"}),
                                         r"config\.json: hidden_size: Input should be a valid integer \(got 'big'\)"),
    # model folders: layerwise.json
    "model-meta-not-object": Case(_corrupt("mlp-residual", "layerwise.json", lambda m: "inputs"),
                                  r"layerwise\.json holds a JSON str, not an object"),
    "model-meta-unknown-key": Case(_corrupt("bert-tiny", "layerwise.json", lambda m: {**m, "colour": 3}, "exit"),
                                   r"layerwise\.json: colour: Extra inputs are not permitted"),
    "model-meta-mistyped-key": Case(
        _corrupt("mlp-residual", "layerwise.json", lambda m: {**m, "inputs": {**m["inputs"], "input_dim": "64"}}),
        r"layerwise\.json: inputs\.input_dim: Input should be a valid integer"),
    # data files, read by analyze
    "data-non-utf8-corpus": Case(_analyze("gpt-tiny", lambda f: f.write("bad.txt", b"First line\nsecond \xff line\n")),
                                 r"bad\.txt " + NOT_UTF8.format(0xFF, 18, 2)),  # 0xff never occurs in UTF-8
    "data-non-utf8-tinyshakespeare": Case(_analyze("gpt-tiny", _tinyshakespeare),
                                          r"input\.txt " + NOT_UTF8.format(0xE9, 3, 1)),
    "data-non-utf8-tsv": Case(_analyze("bert-tiny", lambda f: f.tsv_task(b"ok\t1\n\n\xfe\t0\n")),
                              r"dev\.tsv " + NOT_UTF8.format(0xFE, len(TSV_HEADER) + 6, 4)),
    "data-tsv-negative-label": Case(
        _analyze("bert-tiny", lambda f: f.tsv_task(b"good\t1\n\nbad\t-1\n")),
        r"dev\.tsv line 4 has label -1: labels are class indices counted from 0; fix or remove"),
    "data-tsv-fractional-label": Case(_analyze("bert-tiny", lambda f: f.tsv_task(b"good\t0.5\n")),
                                      r"dev\.tsv line 2 has no integer label \('0\.5'\): fix or remove that row"),
    "data-tsv-missing-field": Case(
        _analyze("bert-tiny", lambda f: f.tsv_task(b"good\t1\nno tab here\n")),
        r"dev\.tsv line 3 has 1 tab-separated fields but the header has 2: fix or remove"),
    # labels outside the model's classes, before any forward pass
    "data-label-outside-head-analyze": Case(_label_outside_analyze, r"has label 5, outside the 2 classes 0\.\.1"),
    "data-label-outside-head-exit": Case(_label_outside_exit, r"has label 5, outside the 2 classes 0\.\.1"),
    "data-label-outside-head-train": Case(_label_outside_train, naming("'5'", "outside the task's labels 0, 1")),
    # GLUE layouts and tables (issue 12)
    "data-table-missing-columns": Case(_analyze("bert-tiny", lambda f: f.write("my.csv", "review,stars\ngood,1\n")),
                                       naming("no text column", "'review', 'stars'", "text column")),
    "data-table-unknown-column": Case(
        _analyze("bert-tiny", lambda f: [str(f.write("my.csv", "text,label\ngood,1\n")), "--label-column", "stars"]),
        naming("no column 'stars'", "'text', 'label'")),
    "data-glue-label-outside-task": Case(_analyze("bert-tiny", _rte_bad_label),
                                         naming("line 3", "'maybe'", "entailment, not_entailment")),
    "data-float-label-classifier": Case(_analyze("bert-tiny", lambda f: f.write("t.csv", "text,label\na,1\nb,0.5\n")),
                                        naming("line 3", "no integer label ('0.5')", "score")),
    "data-glue-no-layout": Case(_analyze("bert-tiny", lambda f: f.tsv_like("mystery", b"a\tb\tc\n1\t2\t3\n")),
                                naming("matches no GLUE task layout", "a, b, c")),
    "exit-regression-head": Case(_exit_regression, naming("regression head", "truncate")),
    # resuming train: a damaged or planted checkpoint; last, as they wait for the finished run to be trained
    "train-resume-lacks-position": Case(_resume(_drop_position), naming("position", "another --out")),
    "train-resume-lacks-scheduler": Case(_resume(_drop_scheduler), naming("scheduler", "another --out")),
    "train-resume-planted-pickle-rng": Case(_resume(_plant_pickle("rng-0.safetensors")),
                                            naming("rng-0.safetensors", "corrupt"), _pickle_never_ran),
    "train-resume-planted-pickle-optimizer": Case(_resume(_plant_pickle("optimizer.pt")),
                                                  naming("optimizer.pt", "corrupt"), _pickle_never_ran),
    "train-resume-latest-outside": Case(_resume(_point_latest_outside),
                                        naming("../../x", "not a checkpoint of this run")),
    # report: folders that are not runs, and an --out that is a folder or a file the command did not write
    "report-folder-missing": Case(_report(lambda f: f.path / "r.html", lambda f: f.path / "nope"),
                                  naming("nope does not exist", "run folders")),
    "report-folder-not-a-run": Case(_report(lambda f: f.path / "r.html", lambda f: f.write("empty/x.txt", "").parent),
                                    naming("empty holds no layerwise run")),
    "report-out-is-folder": Case(_report(lambda f: f.path), naming("--out", "is a folder", ".html")),
    "report-out-foreign-file": Case(_report(_foreign_page), naming("--out", "notes.html", "not written by layerwise"),
                                    _foreign_page_unchanged),
    # lpft: each refused before any training starts (nothing is written under --out)
    "lpft-no-classifier-head": Case(_lpft("gpt2-tiny", "sentences"), naming("gpt2-tiny", "no classifier head"),
                                    after=_nothing_trained),
    "lpft-regression-head": Case(_lpft(_regression_model, "digits"), naming("regression head", "two classes"),
                                 after=_nothing_trained),
    "lpft-subset-larger-than-data": Case(_lpft("mlp-residual", "digits", "--limit", "100000"),
                                         naming("100000", "larger than the", "training examples"),
                                         after=_nothing_trained),
    "lpft-ntk-subset-larger-than-data": Case(_lpft("mlp-residual", "digits", "--limit", "50", "--ntk-subset", "256"),
                                             naming("NTK subset of 256", "larger than the 40"), after=_nothing_trained),
    "lpft-ntk-over-memory-bound": Case(_lpft("mlp-residual", "digits", "--ntk-subset", "256", "--ntk-memory", "1e-4"),
                                       naming("GiB", "lower the NTK chunk size", "or subset"), after=_nothing_trained),
}


def _selected(request) -> list[str]:
    """The CLI cases this session runs (all of them, unless ``-k`` or a test id picks some)."""
    picked = {item.callspec.params["name"] for item in request.session.items
              if getattr(item, "function", None) is test_bad_input_is_one_line_error}
    return [name for name in CASES if name in picked]


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory) -> dict[str, tuple[Folder, subprocess.CompletedProcess]]:
    """Every selected case's folder and ``layerwise`` run. Each case is started as soon as its folder is built,
    a few children at a time (``run_children``); the module takes about as long as the children's imports."""
    shared = tmp_path_factory.mktemp("shared")
    folders = {name: Folder(tmp_path_factory.mktemp(name), shared) for name in _selected(request)}
    runs = run_children(((name, [*CLI, *CASES[name].build(f)]) for name, f in folders.items()),
                        env=subprocess_env(MPLBACKEND="Agg"))
    return {name: (folders[name], runs[name]) for name in folders}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_error(name, cli_runs):
    folder, run = cli_runs[name]
    assert run.returncode == 2, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert re.search(CASES[name].message, lines[0]), lines[0]
    if CASES[name].after:
        CASES[name].after(folder)


# ---------------------------------------------------------------- what only the Python API can be given


def _glue_train_tsv(folder: Path) -> None:
    _write(folder / "glue/TOY/train.tsv", TSV_HEADER + b"good\t1\nna\xefve\t0\n")  # Latin-1 "naïve"
    load_dataset("glue/TOY", "train", data_dir=folder)


def _glue_test_tsv(folder: Path) -> None:
    """test.tsv is read to see whether it is labelled; that read must fail the same way."""
    _write(folder / "glue/TOY/dev.tsv", TSV_HEADER + b"fine\t1\n")
    _write(folder / "glue/TOY/test.tsv", b"index\tsentence\n0\t\x80\n")
    load_dataset("glue/TOY", "test", data_dir=folder)


def _wikitext2(folder: Path) -> None:
    _write(folder / "wikitext-2/valid.txt", b"= Valkyria =\n\xc3\x28\n")  # a lead byte, no continuation
    load_dataset("wikitext2", "valid", data_dir=folder)


def _images(*bad: tuple[int, float]) -> torch.Tensor:
    images = torch.rand(6, 1, 8, 8)
    for index, value in bad:
        images[index, 0, 3, 4] = value
    return images


def _image_dataset(images: torch.Tensor) -> LayerwiseDataset:
    return LayerwiseDataset("toy", "image", images=images, labels=torch.zeros(len(images), dtype=torch.long),
                            class_names=["a", "b"])


def _assign_inf_images(folder: Path) -> None:
    _image_dataset(_images()).images = _images((5, float("inf")))


def _float_labels(folder: Path) -> None:
    ds = LayerwiseDataset("toy", "text", texts=["a", "b"], labels=torch.tensor([0.0, 1.5]), class_names=["a", "b"])
    ds.check_labels(2, "bert-tiny")


def _log_bad_middle_line(folder: Path) -> None:
    (folder / "log.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    read_log(folder / "log.jsonl")


def _threshold(policy: str, value: float) -> Callable[[Path], object]:
    return lambda folder: make_policy(policy, value)


# name → (call(folder) that must raise LayerwiseError, regex its message must match)
API_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "data-non-utf8-glue-train": (_glue_train_tsv, r"train\.tsv " + NOT_UTF8.format(0xEF, len(TSV_HEADER) + 9, 3)),
    "data-non-utf8-glue-test": (_glue_test_tsv, r"test\.tsv " + NOT_UTF8.format(0x80, 17, 2)),
    "data-non-utf8-wikitext2": (_wikitext2, r"valid\.txt " + NOT_UTF8.format(0xC3, 13, 2)),
    "data-nan-images": (lambda folder: _image_dataset(_images((2, float("nan")), (4, float("nan")))),
                        r"toy contains NaN/Inf at example 2 \(2 of 6 examples\): fix the data"),
    "data-inf-images-assigned": (_assign_inf_images, r"toy contains NaN/Inf at example 5 \(1 of 6"),
    "data-float-labels": (_float_labels, r"toy has torch.float32 labels: labels are class indices"),
    "train-log-bad-middle-line": (_log_bad_middle_line, r"line 2 .* not a JSON record"),
    **{f"exit-threshold-{value}-{policy}": (_threshold(policy, float(value)),
                                            f"{policy} threshold .* is not a finite number")
       for value in ("nan", "inf", "-inf") for policy in POLICIES},
}


@pytest.mark.parametrize("name", API_CASES)
def test_bad_input_raises(name, tmp_path):
    call, message = API_CASES[name]
    with pytest.raises(LayerwiseError, match=message):
        call(tmp_path)


# ---------------------------------------------------------------- --out: the probe leaves no trace


def test_out_check_removes_only_what_it_created(tmp_path):
    from layerwise.run_folder import probe_writable

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "user-file").write_text("mine\n")
    probe_writable(tmp_path / "kept" / "new" / "deeper")
    probe_writable(tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").rglob("*")) == ["user-file"]


# ---------------------------------------------------------------- the train run folder, in this process


def test_fresh_run_keeps_foreign_files_and_prunes_only_its_checkpoints(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LayerwiseError, match="notes.txt.*`overwrite`"):
        train(train_config(tmp_path, **TINY))
    train(train_config(tmp_path, **TINY, overwrite=True, epochs=2, checkpoint_every=1))
    assert (out / "notes.txt").read_text() == "mine"
    steps = sorted(p.name for p in (out / "checkpoint").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-00000004-end"]


def test_a_users_checkpoint_folder_is_never_trained_into(tmp_path):
    """A ``checkpoint/`` the tool did not write would be written into: refused, even with ``overwrite``."""
    out = tmp_path / "run"
    (out / "checkpoint" / "mine").mkdir(parents=True)
    (out / "checkpoint" / "mine" / "keep.txt").write_text("mine")
    with pytest.raises(LayerwiseError, match="would replace \\(checkpoint\\)"):
        train(train_config(tmp_path, **TINY, overwrite=True))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "checkpoint", "checkpoint/mine", "checkpoint/mine/keep.txt"]


def test_rerun_of_finished_run_keeps_metrics_and_drops_a_partial_log_line(tmp_path):
    out = tmp_path / "run"
    train(train_config(tmp_path, **TINY, epochs=2))
    metrics = json.loads((out / "metrics.json").read_text())
    complete = (out / "log.jsonl").read_text()
    with (out / "log.jsonl").open("a") as f:
        f.write('{"epoch": 3, "step": 6, "lr": 0.0')  # killed mid-write
    train(train_config(tmp_path, **TINY, epochs=2))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {"lr", "train_loss"} <= set(metrics)
    assert (out / "log.jsonl").read_text() == complete


# ---------------------------------------------------------------- checkpoints run no code


def test_planted_pickle_would_run_code_if_unpickled(tmp_path):
    """The planted file is a real threat: a plain unpickler runs it (``weights_only=False`` did)."""
    torch.save(PlantedPickle(tmp_path / "MARKER"), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert (tmp_path / "MARKER").exists()


def test_rng_state_round_trips_through_safetensors(tmp_path):
    import random

    import numpy as np

    save_rng(tmp_path / "rng.safetensors")
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(read_rng(tmp_path / "rng.safetensors"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before
    assert rng_state().keys() == read_rng(tmp_path / "rng.safetensors").keys()


# ---------------------------------------------------------------- train config files


def test_yaml_exponent_floats_are_numbers(tmp_path):
    """``lr: 1e-3`` is a string to YAML 1.1; the config reader takes it as the number it looks like."""
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nweight_decay: 5E-2\n")
    cfg = resolve_config(config_file=tmp_path / "c.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.checkpoint_every) == (1e-3, 5e-2, None)
