"""Centred kernel alignment (Kornblith et al. 2019): linear (biased and debiased), RBF, minibatch.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).
Biased HSIC uses centred kernels, HSIC ∝ tr(KHLH); for linear kernels tr(KHLH) = ‖XcᵀYc‖²_F.
Unbiased HSIC (Song et al. 2012; Nguyen et al. 2021, eq. 3), with K̃ = K with zero diagonal:
    HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3)).
"""

from functools import partial

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, safe_ratio, same_n
from layerwise.measures.base import SIMILARITY_TRANSFORMS, Measure, pairwise
from layerwise.measures.streaming import LinearStats, hsic_u_terms, need4


def cross_block(matrix: np.ndarray, n_a: int) -> np.ndarray:
    """Rows: the first n_a stacked layers (model a); columns: the rest (model b)."""
    return matrix[:n_a, n_a:]


def cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased linear CKA = ‖XcᵀYc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F)."""
    same_n(x, y)
    return float(LinearStats.of([x, y]).cka()[0, 1])


def cka_debiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Debiased linear CKA from unbiased HSIC (Song et al. 2012; Nguyen et al. 2021). Needs N >= 4."""
    same_n(x, y)
    return float(LinearStats.of([x, y]).cka_debiased()[0, 1])


def linear_matrix(feats_a, feats_b=None, *, debiased: bool = False) -> np.ndarray:
    """All-layer linear CKA from one LinearStats (each Gram block computed once)."""
    stats = LinearStats.of(list(feats_a) + list(feats_b or []))
    m = stats.cka_debiased() if debiased else stats.cka()
    return m if feats_b is None else cross_block(m, len(feats_a))


def rbf_prepare(x: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """Centred, Frobenius-normalised RBF Gram HKH with K_ij = exp(-‖x_i-x_j‖²/(2σ²)).

    σ = factor × median of the off-diagonal pairwise Euclidean distances (i < j; the zero
    self-distances are excluded so they do not pull the median down)."""
    x = f64(x)
    d2 = torch.cdist(x, x).pow(2)
    iu = torch.triu_indices(len(x), len(x), 1, device=x.device)
    dist = d2[iu[0], iu[1]].sqrt().sort().values
    sigma = factor * (dist[(len(dist) - 1) // 2] + dist[len(dist) // 2]) / 2  # median, averaging the middle pair
    k = torch.exp(-d2 / (2 * sigma ** 2))
    k = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    return k / k.norm()


def rbf_pair(ka: torch.Tensor, kb: torch.Tensor) -> float:
    """⟨HKH, HLH⟩_F for normalised centred Grams = RBF CKA."""
    return float((ka * kb).sum())


def cka_rbf(x: torch.Tensor, y: torch.Tensor, factor: float = 1.0) -> float:
    """RBF-kernel CKA (Kornblith et al. 2019), bandwidth = factor × median off-diagonal distance."""
    same_n(x, y)
    return rbf_pair(rbf_prepare(x, factor), rbf_prepare(y, factor))


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    if batch_size < 4:
        raise LayerwiseError(f"minibatch CKA needs batch_size >= 4 (unbiased HSIC), got {batch_size}")
    need4(n, "minibatch CKA")
    starts = list(range(0, n, batch_size))
    if n - starts[-1] < 4 and len(starts) > 1:
        starts.pop()  # fold a <4-sample remainder into the previous batch rather than produce NaN
    return list(zip(starts, starts[1:] + [n]))


def _batch_hsic(feats: list[torch.Tensor]) -> torch.Tensor:
    """Unbiased HSIC between all layers' linear kernels on one batch, L×L via stacked products."""
    n = feats[0].shape[0]
    k = torch.stack([(f64(x) @ f64(x).T).fill_diagonal_(0) for x in feats])
    flat = k.reshape(len(feats), -1)
    rows = k.sum(2)  # K̃1 per layer, (L, n); K̃ is symmetric so 1ᵀK̃L̃1 = (K̃1)·(L̃1)
    tot = rows.sum(1)
    return hsic_u_terms(flat @ flat.T, tot[:, None], tot[None, :], rows @ rows.T, n)


def minibatch_matrix(feats_a, feats_b=None, *, batch_size: int = 1024) -> np.ndarray:
    """Minibatch CKA (Nguyen et al. 2021): unbiased HSIC averaged over consecutive batches for
    HSIC(K,L), HSIC(K,K), HSIC(L,L); the ratio is taken after averaging (as torch-cka does).
    A trailing batch of < 4 samples is merged into the previous one."""
    feats = list(feats_a) + list(feats_b or [])
    bounds = _batch_bounds(feats[0].shape[0], batch_size)
    h = sum(_batch_hsic([x[a:b] for x in feats]) for a, b in bounds) / len(bounds)
    d = torch.diagonal(h).cpu().numpy()
    m = safe_ratio(h.cpu().numpy(), d, d, "mean unbiased HSIC(K, K) is not positive (constant features?)")
    return m if feats_b is None else cross_block(m, len(feats_a))


def cka_minibatch(x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Minibatch debiased linear CKA between two layers (see minibatch_matrix)."""
    same_n(x, y)
    return float(minibatch_matrix([x, y], batch_size=batch_size)[0, 1])


MEASURES = [
    Measure("cka", cka, partial(linear_matrix, debiased=False), SIMILARITY_TRANSFORMS,
            "linear CKA (biased HSIC), Kornblith et al. 2019"),
    Measure("cka_debiased", cka_debiased, partial(linear_matrix, debiased=True), SIMILARITY_TRANSFORMS,
            "linear CKA with unbiased HSIC (Song et al. 2012; Nguyen et al. 2021)"),
    Measure("cka_rbf", cka_rbf, pairwise(rbf_prepare, rbf_pair), SIMILARITY_TRANSFORMS,
            "RBF-kernel CKA, σ = factor × median off-diagonal distance", needs_pairwise=True),
    Measure("cka_minibatch", cka_minibatch, minibatch_matrix, SIMILARITY_TRANSFORMS,
            "minibatch debiased linear CKA (Nguyen et al. 2021), mean HSICs then ratio"),
]
