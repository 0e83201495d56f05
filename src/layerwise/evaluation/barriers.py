"""Barriers along a path of linear interpolation, the pure mathematics of ``connect`` (Frankle et al., 2020;
Adilova et al., "Layer-wise linear mode connectivity", ICLR 2024). Along a path θ(α), α ∈ [0, 1],

    excess(α)  = ℒ(θ(α)) − ((1 − α)·ℒ₀ + α·ℒ₁)
    B_max      = max_α excess(α),   and the α where it peaks,
    B_mid      = excess(½)          (the midpoint barrier, as the paper's heatmaps use),

for the loss and for the error 1 − accuracy. The straight line's ends (ℒ₀, ℒ₁) are the ``baseline``:

    models:  ℒ₀ = ℒ(θ_A), ℒ₁ = ℒ(θ_B)       the two whole models, for every path (the default);
    path:    ℒ₀ = ℒ(θ(0)), ℒ₁ = ℒ(θ(1))     the path's own endpoints.

With α = 0 and 1 on the grid both barriers are ≥ 0 for the full-model path (its excess is 0 at the ends).
Under ``models`` a single-group path ends at a hybrid, not at θ_B, so its excess at α = 1 is the hybrid's
excess and B_max can be that swap rather than a rise along the path; under ``path`` the excess is 0 at both
ends of every path. When ½ is not on the α grid, B_mid is the excess linearly interpolated between the two
grid points around ½ (``midpoint_interpolated`` in the results).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerwise.errors import LayerwiseError

BASELINES = ("models", "path")
MIDPOINT = 0.5


def check_baseline(baseline: str, alphas: Sequence[float]) -> str:
    """``models`` or ``path``; ``path`` reads the path's ends off the curve, so 0 and 1 must be on the grid."""
    if baseline not in BASELINES:
        raise LayerwiseError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}", option="baseline")
    if baseline == "path" and (alphas[0] != 0.0 or alphas[-1] != 1.0):
        raise LayerwiseError("`baseline` path joins each path's own ends, α = 0 and α = 1: put both on the "
                             "`alphas` grid", option="baseline")
    return baseline


def path_ends(curve: Sequence[float], models: tuple[float, float], baseline: str) -> tuple[float, float]:
    """(ℒ₀, ℒ₁) of the straight line: the whole models' ``models`` = (ℒ(θ_A), ℒ(θ_B)), or under ``path`` the
    curve's own first and last points ℒ(θ(0)), ℒ(θ(1)) (the grid starts at 0 and ends at 1)."""
    return (float(curve[0]), float(curve[-1])) if baseline == "path" else (float(models[0]), float(models[1]))


def linear_baseline(alphas: Sequence[float], end_a: float, end_b: float) -> np.ndarray:
    """(1 − α)·ℒ_A + α·ℒ_B on the grid."""
    a = np.asarray(alphas, float)
    return (1.0 - a) * end_a + a * end_b


def excess(alphas: Sequence[float], curve: Sequence[float], end_a: float, end_b: float) -> np.ndarray:
    """ℒ(θ(α)) − ((1 − α)·ℒ_A + α·ℒ_B): how far the path rises above the straight line between the ends."""
    return np.asarray(curve, float) - linear_baseline(alphas, end_a, end_b)


def barrier(alphas: Sequence[float], curve: Sequence[float], end_a: float, end_b: float) -> tuple[float, float]:
    """(max_α excess(α), the α where it peaks; the first such α on ties)."""
    e = excess(alphas, curve, end_a, end_b)
    i = int(np.argmax(e))
    return float(e[i]), float(alphas[i])


def midpoint_barrier(alphas: Sequence[float], curve: Sequence[float], end_a: float, end_b: float) -> float:
    """B_mid = excess(½) = ℒ(θ(½)) − (ℒ₀ + ℒ₁)/2; off the grid, the excess interpolated linearly at ½."""
    return float(np.interp(MIDPOINT, np.asarray(alphas, float), excess(alphas, curve, end_a, end_b)))


def curve_summary(alphas: Sequence[float], paths: Sequence[Path], loss: np.ndarray, error: np.ndarray,
                  ends: dict[str, tuple[float, float]], baseline: str = "models") -> dict:
    """The results of one variant: per path the loss and error curves, their excess over the straight line
    (``baseline``: between the whole models' ``ends[metric] = (ℒ_A, ℒ_B)`` or the path's own ends), the
    maximum barrier B_max (``barrier_*``) with the α of its peak, and the midpoint barrier B_mid
    (``midpoint_barrier_*``)."""
    out: dict = {"groups": [p.name for p in paths], "moving": [list(p.moving) for p in paths],
                 "rest": paths[0].rest if paths else "a"}
    for metric, curves in (("loss", loss), ("error", error)):
        lines = [path_ends(c, ends[metric], baseline) for c in curves]
        out[metric] = curves.tolist()
        out[f"excess_{metric}"] = [excess(alphas, c, *e).tolist() for c, e in zip(curves, lines)]
        peaks = [barrier(alphas, c, *e) for c, e in zip(curves, lines)]
        out[f"barrier_{metric}"] = [v for v, _ in peaks]
        out[f"peak_alpha_{metric}"] = [a for _, a in peaks]
        out[f"midpoint_barrier_{metric}"] = [midpoint_barrier(alphas, c, *e) for c, e in zip(curves, lines)]
    return out
