"""Shared helpers for the measure families: float64 conversion, centring, undefined-value warnings."""

import warnings

import numpy as np
import torch

from layerwise.errors import LayerwiseError, UndefinedLayerWarning


def f64(x) -> torch.Tensor:
    """As a float64 tensor on its own device (all measures are computed in float64)."""
    return torch.as_tensor(x).to(torch.float64)


def centre(x: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over samples (rows)."""
    return x - x.mean(0, keepdim=True)


def same_n(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise LayerwiseError(f"sample counts differ: {x.shape[0]} vs {y.shape[0]}; pass features of the same inputs")


def warn_undefined(what: str, why: str) -> None:
    warnings.warn(f"{what}: {why}: similarity undefined, reported as null", UndefinedLayerWarning, stacklevel=3)


def safe_ratio(num: np.ndarray, den_a: np.ndarray, den_b: np.ndarray, why: str) -> np.ndarray:
    """num / sqrt(den_a ⊗ den_b); NaN (with a warning naming the layers) where a denominator is not positive."""
    bad_a, bad_b = ~(den_a > 0), ~(den_b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / np.sqrt(np.outer(np.where(bad_a, np.nan, den_a), np.where(bad_b, np.nan, den_b)))
    if bad_a.any() or bad_b.any():
        layers = sorted(set(np.flatnonzero(bad_a).tolist()) | set(np.flatnonzero(bad_b).tolist()))
        warn_undefined(f"layer(s) {layers}", why)
    return out
