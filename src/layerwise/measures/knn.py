"""k-nearest-neighbour alignment (Huh et al. 2024, "The platonic representation hypothesis").

Features are L2-normalised; neighbours by inner product, self excluded.
Mutual k-NN: mean_i |kNN_X(i) ∩ kNN_Y(i)| / k.
CKNNA: as their `cknna` (unbiased): with masks M_X (row i marks kNN_X(i)) and M = M_X ⊙ M_Y,
    CKNNA = HSIC_u(M⊙K, M⊙L) / sqrt(HSIC_u(M_X⊙K, M_X⊙K) · HSIC_u(M_Y⊙L, M_Y⊙L)),
HSIC_u(A, B) = [Σ A⊙Bᵀ + ΣA·ΣB/((n-1)(n-2)) - 2·1ᵀAB1/(n-2)] / (n(n-3)) (their formula; the masked
kernels are not symmetric). Their +1e-6 in the denominator is dropped: a non-positive HSIC gives NaN.
"""

import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, same_n
from layerwise.measures.base import Invariances, Measure, pairwise


def knn_prepare(x: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(kNN indices (N, k), kernel values K_ij at those neighbours (N, k))."""
    n = len(x)
    if not 1 <= k < n:
        raise LayerwiseError(f"k-NN measures need 1 <= k < N, got k={k}, N={n}; lower k or add samples")
    xn = f64(x)
    xn = xn / xn.norm(dim=1, keepdim=True)
    sim = (xn @ xn.T).fill_diagonal_(-torch.inf)
    vals, idx = sim.topk(k, dim=1)
    return idx, vals


def _shared(pa, pb) -> torch.Tensor:
    """(N, k) bool: is a's j-th neighbour of i also among b's neighbours of i."""
    return (pa[0][:, :, None] == pb[0][:, None, :]).any(2)


def mutual_knn_pair(pa, pb) -> float:
    """Mean fraction of shared k nearest neighbours."""
    return float(_shared(pa, pb).to(torch.float64).mean())


def _masked(p, keep: torch.Tensor) -> torch.Tensor:
    """Dense N×N kernel values at the kept neighbour positions, zero elsewhere."""
    idx, vals = p
    return torch.zeros(len(idx), len(idx), dtype=torch.float64, device=idx.device).scatter_(1, idx, vals * keep)


def _hsic_u(a: torch.Tensor, b: torch.Tensor) -> float:
    n = len(a)
    ab1 = a.sum(0) @ b.sum(1)  # 1ᵀAB1 in O(N²)
    return float(((a * b.T).sum() + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2 * ab1 / (n - 2)) / (n * (n - 3)))


def cknna_pair(pa, pb) -> float:
    """CKNNA from two prepared layers (same k)."""
    if len(pa[0]) < 4:
        raise LayerwiseError(f"CKNNA needs at least 4 samples, got {len(pa[0])}")
    all_a, all_b = torch.ones_like(pa[1], dtype=torch.bool), torch.ones_like(pb[1], dtype=torch.bool)
    kl = _hsic_u(_masked(pa, _shared(pa, pb)), _masked(pb, _shared(pb, pa)))
    kk = _hsic_u(_masked(pa, all_a), _masked(pa, all_a))
    ll = _hsic_u(_masked(pb, all_b), _masked(pb, all_b))
    return kl / (kk * ll) ** 0.5 if kk > 0 and ll > 0 else float("nan")


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Mutual k-NN alignment (Huh et al. 2024)."""
    same_n(x, y)
    return mutual_knn_pair(knn_prepare(x, k), knn_prepare(y, k))


def cknna(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Centred kernel nearest-neighbour alignment (Huh et al. 2024, unbiased variant)."""
    same_n(x, y)
    return cknna_pair(knn_prepare(x, k), knn_prepare(y, k))


# Neighbourhoods of normalised, uncentred features: a translation changes them.
_KNN = Invariances(orthogonal=True, isotropic_scaling=True, permutation=True)
MEASURES = [
    Measure("mutual_knn", mutual_knn, pairwise(knn_prepare, mutual_knn_pair), _KNN,
            "mutual k-NN alignment (Huh et al. 2024)", needs_pairwise=True),
    Measure("cknna", cknna, pairwise(knn_prepare, cknna_pair, symmetric=False), _KNN,
            "centred kernel nearest-neighbour alignment (Huh et al. 2024); asymmetric like theirs",
            needs_pairwise=True, symmetric=False),
]
