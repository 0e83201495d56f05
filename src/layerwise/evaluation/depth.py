"""Minimal depth (paper Fig. 4): the shallowest layer whose readout is as good as the best, within δ."""

from __future__ import annotations

from typing import Sequence

from layerwise.errors import LayerwiseError


def minimal_depth(per_layer_accuracy: Sequence[float], delta: float = 0.01) -> int:
    """Smallest k (1-based, over layers 1..L) with acc_k ≥ maxₗ acc_ℓ − δ."""
    if not per_layer_accuracy:
        raise LayerwiseError("no per-layer accuracies: evaluate on a non-empty data set")
    best = max(per_layer_accuracy)
    return next(k for k, acc in enumerate(per_layer_accuracy, start=1) if acc >= best - delta - 1e-12)
