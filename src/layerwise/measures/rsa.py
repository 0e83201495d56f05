"""Representational similarity analysis (Kriegeskorte et al. 2008).

RDM_ij = 1 - Pearson correlation between samples i and j's feature vectors (or the Euclidean distance);
RSA = Pearson or Spearman correlation between the two RDMs' upper triangles (i < j).
"""

import scipy.stats
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, same_n
from layerwise.measures.base import Invariances, Measure, pairwise


def _rdm_upper(x: torch.Tensor, rdm: str) -> torch.Tensor:
    x = f64(x)
    if rdm == "correlation":
        z = x - x.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True)  # a sample with constant features gives NaN: undefined
        d = 1 - z @ z.T
    elif rdm == "euclidean":
        d = torch.cdist(x, x)
    else:
        raise LayerwiseError(f"unknown RDM {rdm!r}; use 'correlation' or 'euclidean'")
    iu = torch.triu_indices(len(x), len(x), 1, device=x.device)
    return d[iu[0], iu[1]]


def rsa_prepare(x: torch.Tensor, rdm: str = "correlation", method: str = "spearman") -> torch.Tensor:
    """RDM upper triangle, ranked for Spearman, standardised so RSA is a mean product."""
    if len(x) < 3:
        raise LayerwiseError(f"RSA needs at least 3 samples, got {len(x)}")
    v = _rdm_upper(x, rdm)
    if method == "spearman":
        v = torch.from_numpy(scipy.stats.rankdata(v.cpu().numpy(), nan_policy="propagate")).to(v.device)
    elif method != "pearson":
        raise LayerwiseError(f"unknown RSA method {method!r}; use 'pearson' or 'spearman'")
    v = v - v.mean()
    return v / v.norm()


def rsa_pair(va: torch.Tensor, vb: torch.Tensor) -> float:
    """Correlation of standardised RDM vectors = their dot product."""
    return float(va @ vb)


def rsa(x: torch.Tensor, y: torch.Tensor, rdm: str = "correlation", method: str = "spearman") -> float:
    """RSA between the RDMs of X and Y."""
    same_n(x, y)
    return rsa_pair(rsa_prepare(x, rdm, method), rsa_prepare(y, rdm, method))


MEASURES = [
    # Correlation RDMs centre each sample across features, so rotations of the features change them.
    Measure("rsa", rsa, pairwise(rsa_prepare, rsa_pair), Invariances(isotropic_scaling=True, permutation=True),
            "correlation between representational dissimilarity matrices (1 - Pearson RDM by default)",
            needs_pairwise=True),
]
