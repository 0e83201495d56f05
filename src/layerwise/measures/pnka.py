"""Pointwise normalized kernel alignment, PNKA (Kolling et al. 2023, "Pointwise representational similarity").

Features are centred over samples and each row L2-normalised; K_X = X̂X̂ᵀ is the cosine-similarity kernel.
PNKA_i = cos(K_X[i], K_Y[i]); PNKA = mean_i PNKA_i.
Never forms an N×N×N product: K_X[i]·K_Y[i] = x̂_iᵀ(X̂ᵀŶ)ŷ_i and ‖K_X[i]‖² = x̂_iᵀ(X̂ᵀX̂)x̂_i, so the cost is
O(N d²) time and O(N d + d²) memory (no N×N matrix either).
"""

import torch

from layerwise.measures._util import centre, f64, same_n
from layerwise.measures.base import SIMILARITY_TRANSFORMS, Measure, pairwise


def pnka_prepare(x: torch.Tensor) -> torch.Tensor:
    """Centred, row-normalised features (a zero row stays zero; its PNKA is undefined)."""
    xc = centre(f64(x))
    return xc / xc.norm(dim=1, keepdim=True)


def _rowdots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """K_A[i]·K_B[i] for all i = rowsum((A (AᵀB)) ⊙ B)."""
    return ((a @ (a.T @ b)) * b).sum(1)


def pnka_pair_per_sample(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """Per-sample PNKA from prepared (centred, row-normalised) features."""
    return _rowdots(xa, xb) / (_rowdots(xa, xa) * _rowdots(xb, xb)).sqrt()


def pnka_pair(xa: torch.Tensor, xb: torch.Tensor) -> float:
    return float(pnka_pair_per_sample(xa, xb).mean())


def pnka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-sample PNKA."""
    same_n(x, y)
    return pnka_pair(pnka_prepare(x), pnka_prepare(y))


MEASURES = [
    Measure("pnka", pnka, pairwise(pnka_prepare, pnka_pair), SIMILARITY_TRANSFORMS,
            "pointwise normalized kernel alignment (Kolling et al. 2023), mean over samples"),
]
