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
        if policy.evaluates(ell, hi):
            first.update(ell, policy.decide(logits[ell - 1], memory))
    return first.result


def layer_scores(policy: ExitPolicy, logits: Tensor) -> Tensor:
    """The policy's score of every sample at every layer, (L, N), from (L, N, C) logits of layers 1..L."""
    memory = policy.start(logits.shape[1], logits.device)
    return torch.stack([policy.scores(z, memory) for z in logits])


def calibration_grid(policy: ExitPolicy, logits: Tensor, points: int = 201) -> list[float]:
    """Candidate thresholds, safest first (``ExitPolicy.grid`` of the per-layer scores: quantiles plus the
    never-early end, τ = 1 / entropy 0 / every k from L down for patience)."""
    return policy.grid(layer_scores(policy, logits), points)


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
