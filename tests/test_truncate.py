"""Truncation: the saved-and-reloaded first-k-blocks model predicts exactly what the stack does at k."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import data_batches, logits_of

from layerwise.checkpoints import load_model, make_exit_heads, save_model, truncate
from layerwise.commands.truncate import TruncateOptions, run
from layerwise.data import model_inputs
from layerwise.errors import LayerwiseError
from layerwise.evaluation import minimal_depth

CASES = [("vit-digits", "digits", 10, 2), ("mlp-residual", "digits", 10, 5), ("bert-tiny", "sentences", 2, 2),
         ("vit-hf-tiny", None, 10, 3)]


def _batch(bundle, data):
    if data is None:  # 32×32 RGB for the HF ViT
        return {"pixel_values": torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    return model_inputs(data_batches(data, bundle.inputs, limit=12, batch_size=12)[0])


@pytest.mark.parametrize("name,data,classes,k", CASES)
def test_truncate_round_trip_predicts_the_stack_at_k(tmp_path, name, data, classes, k):
    bundle = load_model(name, num_classes=classes)
    bundle.model.eval()
    x = _batch(bundle, data)
    if data == "sentences":
        assert (x["attention_mask"] == 0).any()  # padded: masks travel through the truncated model too
    with torch.inference_mode():
        want = bundle.stack(x, upto=k)
    saved = save_model(truncate(bundle, k), tmp_path / "cut")
    loaded = load_model(str(saved))
    loaded.model.eval()
    assert loaded.stack.num_layers == k
    config = json.loads((saved / "config.json").read_text())
    assert config.get("depth", config.get("num_hidden_layers")) == k
    with torch.inference_mode():
        assert torch.allclose(loaded.stack(x), want, atol=1e-5)
        assert torch.allclose(logits_of(loaded.model(**x)), want, atol=1e-5)  # the plain forward, too
    assert bundle.stack.num_layers > k  # the original is untouched


def test_truncating_a_multi_exit_model_uses_head_k(tmp_path):
    bundle = load_model("mlp-residual", num_classes=10)
    bundle.model.eval()
    bundle.exit_heads = make_exit_heads(bundle.stack).eval()
    with torch.no_grad():
        for p in bundle.exit_heads[3].parameters():
            p.add_(torch.randn_like(p))
    x = _batch(bundle, "digits")
    with torch.inference_mode():
        s = bundle.stack.states(x, upto=4)
        want = bundle.exit_heads[3](list(s)[-1].h)
    loaded = load_model(str(save_model(truncate(bundle, 4), tmp_path / "cut")))
    assert loaded.exit_heads is None
    with torch.inference_mode():
        assert torch.allclose(loaded.model.eval()(**x), want, atol=1e-5)


def test_truncate_bad_k(tmp_path):
    bundle = load_model("mlp-residual")
    for k in (0, 9):
        with pytest.raises(LayerwiseError, match=f"k={k} out of range: this model has layers 1..8"):
            truncate(bundle, k)
    with pytest.raises(LayerwiseError, match="k=99 out of range"):
        run(TruncateOptions(model="mlp-residual", k=99, out=tmp_path / "x"))


def test_minimal_depth():
    acc = [0.5, 0.8, 0.895, 0.91, 0.90]
    assert minimal_depth(acc, 0.0) == 4
    assert minimal_depth(acc, 0.015) == 3
    assert minimal_depth(acc, 0.5) == 1
    with pytest.raises(LayerwiseError, match="no per-layer accuracies"):
        minimal_depth([], 0.01)
