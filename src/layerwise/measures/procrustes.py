"""Orthogonal Procrustes similarity (Ding et al. 2021; Williams et al. 2021).

With X, Y centred and scaled to ‖X‖_F = ‖Y‖_F = 1 (the narrower zero-padded to equal width, which
leaves XᵀY's singular values unchanged): d² = min_Q ‖X - YQ‖²_F = 2 - 2‖XᵀY‖_*, and the similarity
1 - d²/2 = ‖XᵀY‖_* (nuclear norm) lies in [0, 1].
"""

import torch

from layerwise.measures._util import centre, f64, same_n
from layerwise.measures.base import SIMILARITY_TRANSFORMS, Measure, pairwise


def procrustes_prepare(x: torch.Tensor) -> torch.Tensor:
    """Centred, Frobenius-normalised features."""
    xc = centre(f64(x))
    return xc / xc.norm()


def procrustes_pair(xa: torch.Tensor, xb: torch.Tensor) -> float:
    """‖XᵀY‖_* = sum of the singular values of the (d_a, d_b) cross product."""
    return float(torch.linalg.svdvals(xa.T @ xb).sum())


def procrustes(x: torch.Tensor, y: torch.Tensor) -> float:
    """Procrustes similarity ‖XᵀY‖_* of centred, unit-Frobenius X and Y (1 - d²/2)."""
    same_n(x, y)
    return procrustes_pair(procrustes_prepare(x), procrustes_prepare(y))


MEASURES = [
    Measure("procrustes", procrustes, pairwise(procrustes_prepare, procrustes_pair), SIMILARITY_TRANSFORMS,
            "orthogonal Procrustes similarity ‖XᵀY‖_* = 1 - d²/2"),
]
