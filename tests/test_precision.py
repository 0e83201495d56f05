"""Half-precision forward passes (``dtype`` bf16 / fp16): the analysis warns with the largest difference of
its features and of linear CKA against float32, measured on the first batch; checked against the same
quantities computed here from the float32 model and its bf16 copy (float64 formulas)."""

from __future__ import annotations

import copy

import pytest
import torch

from layerwise.checkpoints import load_model, save_model
from layerwise.data import load_dataset, make_loader
from layerwise.stack import LayerStack


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred float64 features."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float((x.T @ y).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_bf16_analysis_reports_its_gap_to_float32(tmp_path):
    from layerwise.commands.analyze import AnalyzeOptions, run

    folder = tmp_path / "model"  # saved: the analysis and this test load the same weights
    save_model(load_model("mlp-residual"), folder)
    results = run(AnalyzeOptions(model=str(folder), data="digits", limit=80, batch_size=32, measures="cka_linear",
                                 device="cpu", probe=False, dtype="bf16", out=tmp_path / "a"))
    gap = results["precision"]
    assert gap["samples"] == 32

    bundle = load_model(str(folder))
    ref = bundle.model.eval()
    half = copy.deepcopy(ref).to(torch.bfloat16)
    batch = next(iter(make_loader(load_dataset("digits", "test", limit=80), bundle.inputs, 32)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        f32 = [f.double() for f in LayerStack(ref).hidden_states(inputs)]
        f16 = [f.double() for f in LayerStack(half).hidden_states({k: v.bfloat16() for k, v in inputs.items()})]
    f32 = [f.reshape(f.shape[0], -1) for f in f32]
    f16 = [f.reshape(f.shape[0], -1) for f in f16]
    rel = [float((a - b).norm() / b.norm()) for a, b in zip(f16, f32)]
    assert gap["feature_gap"] == pytest.approx(max(rel), rel=1e-6)
    assert max(rel) > 1e-4  # bf16 really changed the features (8 bits of mantissa)
    i, j = gap["cka_gap_layers"]
    assert gap["cka_gap"] == pytest.approx(abs(linear_cka(f16[i], f16[j]) - linear_cka(f32[i], f32[j])), abs=1e-9)
    worst = max(abs(linear_cka(f16[a], f16[b]) - linear_cka(f32[a], f32[b]))
                for a in range(len(f32)) for b in range(len(f32)))
    assert gap["cka_gap"] == pytest.approx(worst, abs=1e-9)
    [message] = [w for w in results["warnings"] if "bf16 forward pass" in w]
    assert f"{gap['feature_gap']:.2%}" in message and f"{gap['cka_gap']:.2g}" in message
