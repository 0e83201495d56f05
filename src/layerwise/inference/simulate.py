"""Exit decisions from precomputed per-layer logits: exact simulation, threshold grids and ε-calibration.

Simulation needs one forward pass for all thresholds: the runner's decisions depend only on each layer's
logits, so ``simulate`` reproduces them exactly without compaction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from layerwise.inference.policies import ExitPolicy
from layerwise.inference.runner import ExitResult, FirstExit, layer_speedup


def accuracy(prediction: Tensor, labels: Tensor) -> float:
    """mean[prediction = label]."""
    return float((prediction.cpu() == labels.cpu()).double().mean())


def simulate(policy: ExitPolicy, logits: Tensor, lo: int = 1, hi: int | None = None) -> ExitResult:
    """What the runner decides, from (L, N, C) logits of layers 1..L."""
    hi = hi or logits.shape[0]
    memory = policy.start(logits.shape[1], logits.device)
    first = FirstExit(logits.shape[1], hi)
    for ell in range(lo, hi + 1):
        first.update(ell, policy.decide(logits[ell - 1], memory))
    return first.result


def calibration_grid(policy: ExitPolicy, logits: Tensor, points: int = 201) -> list[float]:
    """Safest first: distinct quantiles of the per-layer scores (so the grid adapts to how confident the
    model is) plus the never-early end (τ = 1 / entropy 0 / k = L)."""
    if policy.name == "patience":
        return [float(k) for k in range(logits.shape[0], 0, -1)]
    probs = logits.float().softmax(-1)
    if policy.name == "confidence":
        scores = probs.max(-1).values.flatten()
    else:
        scores = -(probs * probs.clamp_min(1e-30).log()).sum(-1).flatten()
    q = torch.quantile(scores.double(), torch.linspace(0, 1, points, dtype=torch.double)).tolist()
    if policy.name == "confidence":
        return sorted({1.0, *[v for v in q if 0.0 < v <= 1.0]}, reverse=True)
    return sorted({0.0, *[max(v, 0.0) for v in q]})


def calibrate(policy: ExitPolicy, logits: Tensor, labels: Tensor, eps: float, lo: int, hi: int) -> dict[str, Any]:
    """The threshold with the largest layer-count speedup whose accuracy on (validation) logits stays within ε
    of the full model's (layer L); ties go to the safer threshold. Candidates: ``calibration_grid``."""
    full = accuracy(logits[-1].argmax(-1), labels)
    best: dict[str, Any] | None = None
    for tau in calibration_grid(policy, logits):
        r = simulate(policy.with_threshold(tau), logits, lo, hi)
        acc, s = accuracy(r.prediction, labels), layer_speedup(r.histogram(logits.shape[0]))
        if full - acc <= eps + 1e-12 and (best is None or s > best["layer_speedup"] + 1e-12):
            best = {"threshold": tau, "val_accuracy": acc, "val_full_accuracy": full, "layer_speedup": s}
    return best  # the safest threshold (never early) always qualifies, so best is set
