"""The command-line flags of issue 23 against the library calls they map to: ``generate --check-every``,
``--policy saturation | classifier``, ``--draft-vocab``, ``exit --check-every``, ``train-exit-classifier``,
``train --aligned-layers``, and the token counts ``new-gpt`` saves and ``train`` copies along.

Each CLI run is compared with the library function called directly on the same model. That is a second path
through the same library, which is enough here because the functions themselves are tested against independent
references elsewhere: the readout-free policies and ``check_every`` against the rule applied by hand to Hugging
Face hidden states (``test_exit_signals.py``), the reduced draft against full greedy decoding and a chi-square
test (``test_speculative.py``), the sampled layer weights by unbiasedness over seeded draws
(``test_layer_sampling.py``). Where a reference is cheap it is used as well: the token counts against a bincount
of the tokenizer's own encoding, the reduced draft's output against full greedy decoding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import run_cli

from layerwise.checkpoints import load_model
from layerwise.data import load_dataset
from layerwise.data.corpora import corpus_blocks
from layerwise.inference.decoding import Greedy
from layerwise.inference.draft_vocab import draft_vocabulary, load_token_counts
from layerwise.inference.exit_classifier import load_exit_classifier, train_exit_classifier
from layerwise.inference.policies import make_policy
from layerwise.inference.speculative import speculative_text
from layerwise.inference.token_exit import token_exit_text

PROMPTS = ["To be", "The king"]
GREEDY = ["--decoding", "greedy", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory) -> Path:
    """A small own GPT made by ``new-gpt`` (seeded weights, BPE of 512 tokens on tinyshakespeare)."""
    out = tmp_path_factory.mktemp("gpt") / "g"
    code = _cli_subprocess(["new-gpt", "--corpus", "tinyshakespeare", "--vocab-size", "512", "--depth", "4",
                            "--dim", "64", "--heads", "4", "--max-len", "128", "--out", str(out)])
    assert code == 0
    return out


def _cli_subprocess(args: list[str]) -> int:
    import subprocess

    from fixtures import CLI, subprocess_env

    return subprocess.run([*CLI, *args], env=subprocess_env(), capture_output=True).returncode


def _prompt_flags() -> list[str]:
    return [flag for p in PROMPTS for flag in ("--prompt", p)]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def test_new_gpt_saves_the_token_counts_of_its_corpus(gpt):
    tok = load_model(str(gpt)).inputs.tokenizer
    ids = tok.encode(load_dataset("tinyshakespeare", "train").text, add_special_tokens=False)
    reference = torch.bincount(torch.tensor(ids), minlength=len(tok))
    assert torch.equal(load_token_counts(gpt), reference)
    assert json.loads((gpt / "token_counts.json").read_text())["corpus"] == "tinyshakespeare"


def test_train_copies_the_token_counts_along(gpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "trained"
    code, _, err = run_cli(monkeypatch, capsys, "train", "--model", gpt, "--data", "tinyshakespeare", "--limit", "4",
                           "--eval-limit", "2", "--seq-len", "32", "--batch-size", "4", "--epochs", "1", "--cpu",
                           "--no-progress", "--out", out)
    assert code == 0, err
    assert torch.equal(load_token_counts(out), load_token_counts(gpt))
    assert "token_counts.safetensors" in json.loads((out / ".layerwise.json").read_text())["files"]


def test_generate_saturation_with_check_every_decodes_as_token_exit_text(gpt, monkeypatch, capsys):
    bundle = load_model(str(gpt))

    def direct(every: int):
        return token_exit_text(bundle.stack, bundle.inputs.tokenizer, PROMPTS,
                               make_policy("saturation", 0.5, 1, None, check_every=every), kv_fill="propagate",
                               decoding=Greedy(), max_new_tokens=8)

    code, out, err = run_cli(monkeypatch, capsys, "generate", "--model", gpt, *_prompt_flags(), *GREEDY,
                             "--early-exit", "--policy", "saturation", "--threshold", "0.5", "--check-every", "2")
    texts, result = direct(2)
    histogram = result.stats()["exit_histogram"]
    assert code == 0 and out.splitlines() == texts, err
    assert f"exits per layer {histogram}" in err and histogram[1] == 0  # layer 2 is never evaluated
    assert direct(1)[1].stats()["exit_histogram"] != histogram  # so the flag is seen to matter on this model


def test_generate_draft_vocab_gives_the_full_models_greedy_text(gpt, monkeypatch, capsys):
    bundle = load_model(str(gpt))
    code, full, _ = run_cli(monkeypatch, capsys, "generate", "--model", gpt, *_prompt_flags(), *GREEDY)
    code_d, drafted, err = run_cli(monkeypatch, capsys, "generate", "--model", gpt, *_prompt_flags(), *GREEDY,
                                   "--speculative", "--exit-layer", "2", "--draft-vocab", "64")
    vocab = draft_vocabulary(load_token_counts(gpt), 64)
    texts, stats = speculative_text(bundle.stack, bundle.inputs.tokenizer, PROMPTS, 2, 4, decoding=Greedy(),
                                    max_new_tokens=8, draft_vocab=vocab)
    assert code == code_d == 0 and drafted == full and drafted.splitlines() == texts
    assert f"acceptance {stats.acceptance_rate:.2f} over {stats.rounds} rounds" in err


def test_train_exit_classifier_saves_what_the_library_fits_and_generate_uses_it(gpt, tmp_path, monkeypatch,
                                                                                 capsys):
    model = Path(shutil.copytree(gpt, tmp_path / "g"))
    before = _tree(model)
    code, out, err = run_cli(monkeypatch, capsys, "train-exit-classifier", "--model", model, "--data",
                             "tinyshakespeare", "--limit", "4", "--seq-len", "32", "--batch-size", "2")
    assert code == 0, err
    after = _tree(model)
    assert set(after) - set(before) == {"exit_classifier.safetensors", "exit_classifier.json"}
    assert all(after[name] == data for name, data in before.items())  # nothing else touched
    bundle = load_model(str(model))
    blocks = corpus_blocks(load_dataset("tinyshakespeare", "train", limit=4, seed=0), bundle.inputs.tokenizer, 32)
    fitted = train_exit_classifier(bundle.stack, [{"input_ids": b, "attention_mask": torch.ones_like(b)}
                                                  for b in blocks.split(2)])
    saved = load_exit_classifier(model)
    assert torch.allclose(saved.weight, fitted.weight.float()) and torch.allclose(saved.bias, fitted.bias.float())

    code, out, err = run_cli(monkeypatch, capsys, "generate", "--model", model, *_prompt_flags(), *GREEDY,
                             "--early-exit", "--policy", "classifier", "--threshold", "0.5")
    texts, result = token_exit_text(bundle.stack, bundle.inputs.tokenizer, PROMPTS,
                                    make_policy("classifier", 0.5, classifier=saved), decoding=Greedy(),
                                    max_new_tokens=8)
    assert code == 0 and out.splitlines() == texts and f"exits per layer {result.stats()['exit_histogram']}" in err


def test_exit_check_every_evaluates_only_every_kth_layer(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "exit", "--model", "mlp-residual", "--data", "digits", "--limit",
                           "128", "--check-every", "2", "--out", tmp_path / "exit")
    assert code == 0, err
    results = json.loads((tmp_path / "exit" / "results.json").read_text())
    report = results["models"][0]
    L = report["num_layers"]
    skipped = [ell for ell in range(2, L) if (ell - 1) % 2]  # min_layer 1: layers 1, 3, 5, … and L are evaluated
    assert results["check_every"] == 2 and skipped
    histograms = [report["exit_histogram"], *[p["histogram"] for p in report["sweep"]]]
    assert all(h[ell - 1] == 0 for h in histograms for ell in skipped)
    assert any(sum(h[:-1]) > 0 for h in histograms)  # some thresholds do exit early


def test_train_aligned_layers_reaches_the_objective_module(tmp_path):
    """The trainer's loss is ``ObjectiveModule``'s with the same k and seed (the first draw), not the full one."""
    from layerwise.commands.train import TrainOptions, config
    from layerwise.training import objectives as O
    from layerwise.training.trainer import Trainer

    options = TrainOptions(model="gpt-tiny", data="tinyshakespeare", objective="aligned-joint", aligned_layers=1,
                           depth=4, limit=8, eval_limit=2, seq_len=16, batch_size=4, epochs=1, seed=3,
                           out=tmp_path / "run", cpu=True, progress=False)
    trainer = Trainer(config(options))
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    weights = trainer.module.weights
    sampled = O.ObjectiveModule(trainer.stack, None, weights, 0.0, aligned_layers=1, seed=3)
    full = O.ObjectiveModule(trainer.stack, None, weights, 0.0)
    with torch.no_grad():
        loss = trainer.module(batch, "aligned")
        assert torch.equal(loss, sampled(batch, "aligned"))
        assert not torch.allclose(loss, full(batch, "aligned"))
