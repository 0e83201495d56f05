"""Canonical correlation analysis measures: mean CCA, SVCCA (Raghu et al. 2017), PWCCA (Morcos et al. 2018).

Canonical correlations ρ_i are the singular values of Q_xᵀQ_y, where Q_x is an orthonormal basis of the
centred X's column space (from an SVD, dropping directions with σ <= σ_max·max(N, d)·eps, so constant or
collinear neurons are handled). Plain CCA requires N > width: with N <= d every ρ is trivially 1, so we
raise instead of returning a meaningless 1; SVCCA only needs N > the number of kept directions.
"""

from dataclasses import replace

import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import centre, f64, same_n
from layerwise.measures.base import SIMILARITY_TRANSFORMS, Invariances, Measure, pairwise


def _basis(u: torch.Tensor, s: torch.Tensor, shape) -> torch.Tensor:
    tol = s.max() * max(shape) * torch.finfo(torch.float64).eps if len(s) else 0.0
    return u[:, s > tol]


def _need_samples(n: int, d: int, what: str) -> None:
    if n <= d:
        raise LayerwiseError(f"{what} needs more samples than features (N={n} <= width {d}); "
                             "use SVCCA or more samples")


def cca_prepare(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(orthonormal basis Q of the centred X (N, r), centred X)."""
    xc = centre(f64(x))
    _need_samples(*xc.shape, "CCA")
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    return _basis(u, s, xc.shape), xc


def svcca_prepare(x: torch.Tensor, keep: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Basis of the top singular directions explaining `keep` of the centred X's variance."""
    xc = centre(f64(x))
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    u, s = u[:, s > 0], s[s > 0]
    frac = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
    k = int((frac < keep).sum()) + 1 if len(s) else 0
    _need_samples(xc.shape[0], k, "SVCCA (after the SVD reduction)")
    return u[:, :k], xc


def _rho(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)


def cca_pair(pa, pb) -> float:
    """Mean canonical correlation over the min(rank) canonical pairs."""
    return float(_rho(pa[0], pb[0]).mean())


def pwcca_pair(pa, pb) -> float:
    """PWCCA = Σ α_i ρ_i / Σ α_i, α_i = Σ_j |⟨h_i, x_j⟩| with h_i X's (unit) canonical variates and
    x_j X's centred neurons. Asymmetric: weights come from the first argument."""
    (qa, xa), (qb, _) = pa, pb
    u, rho, _ = torch.linalg.svd(qa.T @ qb, full_matrices=False)
    h = qa @ u[:, :len(rho)]  # (N, r) canonical variates of X, orthonormal
    alpha = (h.T @ xa).abs().sum(1)
    return float((alpha * rho.clamp(max=1.0)).sum() / alpha.sum())


def mean_cca(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean canonical correlation between X and Y (needs N > both widths)."""
    same_n(x, y)
    return cca_pair(cca_prepare(x), cca_prepare(y))


def svcca(x: torch.Tensor, y: torch.Tensor, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): mean CCA after keeping the directions explaining 99% of variance."""
    same_n(x, y)
    return cca_pair(svcca_prepare(x, keep), svcca_prepare(y, keep))


def pwcca(x: torch.Tensor, y: torch.Tensor) -> float:
    """Projection-weighted CCA (Morcos et al. 2018), weights from X's neurons."""
    same_n(x, y)
    return pwcca_pair(cca_prepare(x), cca_prepare(y))


MEASURES = [
    Measure("cca", mean_cca, pairwise(cca_prepare, cca_pair), replace(SIMILARITY_TRANSFORMS, invertible_linear=True),
            "mean canonical correlation"),
    Measure("svcca", svcca, pairwise(svcca_prepare, cca_pair), SIMILARITY_TRANSFORMS,
            "SVCCA: CCA on directions explaining 99% variance (Raghu et al. 2017)"),
    Measure("pwcca", pwcca, pairwise(cca_prepare, pwcca_pair, symmetric=False),
            Invariances(isotropic_scaling=True, translation=True, permutation=True),
            "projection-weighted CCA (Morcos et al. 2018); weights from the row layer", symmetric=False),
]
