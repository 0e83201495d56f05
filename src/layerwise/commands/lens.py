"""``lens``: train a tuned lens for a model (the trainer's run folder: log.jsonl, metrics.json, checkpoint/, then
lens.safetensors + lens.json), then score every layer on the evaluation split through the logit lens and the
tuned lens, per sequence, with 95 % bootstrap intervals over the sequences (results.json, lens.png,
sequences.safetensors). With ``baseline`` (another ``lens`` run folder on the same evaluation sequences) its
curves are drawn beside these and the two questions of the comparison are answered with paired intervals.

Also the ``lens`` option of ``analyze``, ``exit``, ``generate`` and ``gen-eval``: ``check_lenses``.

    from layerwise.commands import lens
    lens.run(lens.LensOptions(model="runs/gpt", data="wikitext2", out="runs/gpt-lens"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError

WEIGHTS = "lens.safetensors"  # stack.lens.WEIGHTS (not imported: torch)
SEQUENCES = "sequences.safetensors"


def check_lenses(values: list[str], models: list[str]) -> list[str]:
    """The ``lens`` option: ``logit`` or ``tuned:DIR`` (a folder holding lens.safetensors), one for every model or
    one per model; returns one per model. Answered before torch loads (the shapes are checked after the model)."""
    if len(values) not in (1, len(models)):
        raise LayerwiseError(f"{len(values)} lenses for {len(models)} models: pass one `lens` for all of them or "
                             "one per model, in the order of `model`", option="lens")
    for spec in values:
        text = spec.strip()
        if text == "logit":
            continue
        folder = text[len("tuned:"):].strip() if text.startswith("tuned:") else ""
        if not folder:
            raise LayerwiseError(f"`lens` {spec!r}: use logit or tuned:DIR (a folder written by `layerwise lens`)",
                                 option="lens")
        if not (Path(folder) / WEIGHTS).is_file():
            raise LayerwiseError(f"`lens` {spec!r}: {folder} holds no {WEIGHTS}: train one with `layerwise lens`",
                                 option="lens")
    return [v.strip() for v in values] * (len(models) if len(values) == 1 else 1)


class LensOptions(CommandOptions):
    """The options of ``lens``: what the tuned lens is trained on and how (the trainer's keys), and its scoring."""

    model: str  # a language model or a classifier: built-in name, folder or hub name
    data: str
    out: Folder = Path("runs/lens")
    train_split: str = "train"  # e.g. wikitext2 has no train split here: valid
    eval_split: str = "test"
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt | None = None
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    schedule: str = "cosine"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    seq_len: PositiveInt = 128  # language models: tokens per block
    limit: PositiveInt | None = None  # training examples (blocks of a corpus)
    eval_limit: PositiveInt | None = None  # evaluation examples scored per layer (seeded)
    checkpoint_every: PositiveInt | None = None
    bootstrap: int = Field(1000, ge=100)  # resamples of the 95 % intervals over evaluation sequences
    baseline: Folder | None = None  # another `lens` run folder on the same evaluation data, drawn beside this one
    seed: int = Field(0, ge=0)
    data_dir: Folder | None = None
    cpu: bool = False
    progress: bool = True
    resume: bool = False
    overwrite: bool = False


def train_config(o: LensOptions):
    """The ``TrainConfig`` of the lens's training (objective tuned-lens)."""
    import layerwise.training.lens  # noqa: F401  (registers the objective)
    from layerwise.training import TrainConfig
    from layerwise.schema import validate

    return validate(TrainConfig, dict(
        model=o.model, data=o.data, out=str(o.out), objective="tuned-lens", epochs=o.epochs, batch_size=o.batch_size,
        eval_batch_size=o.eval_batch_size, lr=o.lr, weight_decay=o.weight_decay, schedule=o.schedule,
        warmup_steps=o.warmup_steps, max_grad_norm=o.max_grad_norm, seq_len=o.seq_len, limit=o.limit,
        eval_limit=o.eval_limit, eval_split=o.eval_split, train_split=o.train_split,
        checkpoint_every=o.checkpoint_every, seed=o.seed, data_dir=str(o.data_dir) if o.data_dir else None,
        cpu=o.cpu, progress=o.progress, resume=o.resume, overwrite=o.overwrite), option_keys=True)


def _read_baseline(folder: Path) -> dict:
    from layerwise.files import read_json

    if not (folder / "results.json").is_file() or not (folder / SEQUENCES).is_file():
        raise LayerwiseError(f"`baseline` {folder}: not a finished `layerwise lens` run folder (results.json and "
                             f"{SEQUENCES})", option="baseline")
    results = read_json(folder / "results.json")
    if not isinstance(results, dict) or results.get("command") != "lens":
        raise LayerwiseError(f"`baseline` {folder}/results.json was not written by `layerwise lens`", option="baseline")
    return results


def run(options: LensOptions) -> dict[str, Any]:
    """Train the tuned lens, score both lenses per layer, write and return the results."""
    o = options
    if o.baseline is not None:
        _read_baseline(Path(o.baseline))
    cfg = train_config(o)
    from layerwise.evaluation.lens import layer_summary, sequence_scores
    from layerwise.report.serialize import atomic_save_tensors, write_json
    from layerwise.stack import LogitLens
    from layerwise.training.lens import train_lens

    lens, record, trainer = train_lens(cfg)  # opens the run folder first (training.lens.LensTrainer.open_folder)
    if not trainer.accelerator.is_main_process:
        return record
    out, stack = Path(o.out), trainer.stack
    lenses = {"logit": LogitLens(), "tuned": lens}
    scores = sequence_scores(stack, list(lenses.values()), trainer.eval_loader, trainer.accelerator.device)
    atomic_save_tensors({k: v.contiguous() for k, v in scores.items()}, out / SEQUENCES,
                        metadata={"lenses": ",".join(lenses), "model": o.model})
    nll, correct, count = (scores[k].numpy() for k in ("nll", "correct", "count"))
    results: dict[str, Any] = {
        "command": "lens", "model": o.model, "data": o.data, "split": o.eval_split, "task": stack.task,
        "layers": list(range(stack.num_layers + 1)), "sequences": int(len(count)), "tokens": int(count.sum()),
        "lenses": {name: layer_summary(nll[k], correct[k], count, o.bootstrap, o.seed)
                   for k, name in enumerate(lenses)},
        "kl": record.get("kl"), "training": {"steps": trainer.pos.step, "epochs": trainer.pos.epoch},
        "interval": "95 % percentile bootstrap over evaluation sequences", "bootstrap": o.bootstrap,
    }
    if o.baseline is not None:
        results["baseline"] = compare_baseline(Path(o.baseline), results, nll, count, o)
    write_json(results, out / "results.json")
    lens_figure(results, out / "lens.png")
    trainer.folder.record()
    return results


def compare_baseline(folder: Path, results: dict, nll, count, o: LensOptions) -> dict:
    """The baseline's curves, and the paired gaps of the middle layers 1..L−1 (mean log-perplexity difference):
    this model's logit lens against the baseline's tuned lens, and this model's tuned lens against its logit lens."""
    import numpy as np

    from layerwise.evaluation.lens import mean_log_ppl_gap
    from layerwise.report.serialize import load_beside_model

    base = _read_baseline(folder)
    theirs = load_beside_model(folder / SEQUENCES, ("nll", "count"))
    if theirs["count"].shape != count.shape or not np.array_equal(theirs["count"].numpy(), count):
        raise LayerwiseError(f"`baseline` {folder} was scored on other sequences: score both models on the same "
                             "data, split, `seq_len` and `eval_limit` (with the same tokenizer)", option="baseline")
    their_nll = theirs["nll"].numpy()
    if their_nll.shape != nll.shape:
        raise LayerwiseError(f"`baseline` {folder} has {their_nll.shape[1] - 1} layers and this model "
                             f"{nll.shape[1] - 1}: compare models of the same depth", option="baseline")
    middle = list(range(1, nll.shape[1] - 1))
    return {
        "model": base.get("model"), "lenses": base.get("lenses"),
        # > 0: this model's logit lens reads the middle layers better than the baseline's tuned lens
        "tuned_baseline_minus_logit_this": mean_log_ppl_gap(their_nll[1], nll[0], count, middle, o.bootstrap, o.seed),
        # > 0: the tuned lens still helps this model
        "logit_this_minus_tuned_this": mean_log_ppl_gap(nll[0], nll[1], count, middle, o.bootstrap, o.seed),
    }


def lens_figure(results: dict, path: Path) -> None:
    """Per-layer perplexity (language models) or accuracy (classifiers) of each lens with its 95 % interval, and
    the baseline's beside it."""
    from matplotlib.figure import Figure

    key = "perplexity" if results["task"] == "lm" else "accuracy"
    curves = [(results["model"], results["lenses"])]
    if "baseline" in results and results["baseline"].get("lenses"):
        curves.insert(0, (results["baseline"]["model"], results["baseline"]["lenses"]))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    styles = {"logit": "--", "tuned": "-"}
    for c, (model, lenses) in enumerate(curves):
        for name, s in lenses.items():
            y, band = s[key], s[f"{key}_interval"]
            x = list(range(len(y)))
            ax.plot(x, y, styles.get(name, "-"), color=f"C{c}", marker="o", ms=3, label=f"{Path(model).name} + {name} lens")
            ax.fill_between(x, [b[0] for b in band], [b[1] for b in band], color=f"C{c}", alpha=0.15)
    if key == "perplexity":
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"test {key}")
    ax.set_title(f"{results['data']} {results['split']}: logit lens vs tuned lens (95 % bootstrap)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)  # a figure is redrawn whole by a re-run
