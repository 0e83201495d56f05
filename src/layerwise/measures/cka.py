"""Centred kernel alignment (Kornblith et al. 2019): linear (biased and debiased), RBF, minibatch.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).
Biased HSIC uses centred kernels, HSIC ∝ tr(KHLH); for linear kernels tr(KHLH) = ‖XcᵀYc‖²_F.
Unbiased HSIC (Song et al. 2012; Nguyen et al. 2021, eq. 3), with K̃ = K with zero diagonal:
    HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1] / (n(n-3)).
"""

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, safe_ratio, same_n


def _hsic_u_terms(tr, sk, sl, kl, n):
    """Unbiased HSIC from tr(K̃L̃), 1ᵀK̃1, 1ᵀL̃1, 1ᵀK̃L̃1 (works elementwise on arrays)."""
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))


def _need4(n: int, what: str = "debiased CKA") -> None:
    if n < 4:
        raise LayerwiseError(f"{what} needs at least 4 samples, got {n}; use more samples (or biased CKA)")


class LinearStats:
    """Streaming sufficient statistics for exact linear CKA (biased and debiased) over many layers.

    Memory is O((ΣD)²), independent of N. With Z = [X_0 | X_1 | ...] (float64) it holds n, Σz_i,
    the upper-triangular blocks of ZᵀZ (as row slabs X_ℓᵀ[X_ℓ | X_ℓ+1 | ...]), and with
    s_i^ℓ = ‖x_i^ℓ‖²: Σ z_i s_iᵀ (ΣD, L), Σ s_i s_iᵀ (L, L), Σ s_i (L,).
    """

    def __init__(self) -> None:
        self.n = 0
        self.widths: list[int] = []

    @classmethod
    def of(cls, feats: list[torch.Tensor]) -> "LinearStats":
        stats = cls()
        stats.update(feats)
        return stats

    @property
    def offsets(self) -> list[int]:
        return np.concatenate([[0], np.cumsum(self.widths)]).tolist()

    def update(self, feats: list[torch.Tensor]) -> None:
        """Add one batch: feats[ℓ] is (B, d_ℓ) for every layer ℓ, same B rows (same inputs)."""
        z = torch.cat([f64(x) for x in feats], dim=1)
        if not self.widths:
            self.widths = [x.shape[1] for x in feats]
            dev, total, nl = z.device, z.shape[1], len(feats)
            self.sums = torch.zeros(total, dtype=torch.float64, device=dev)
            self.gram = [torch.zeros(d, total - o, dtype=torch.float64, device=dev)
                         for d, o in zip(self.widths, self.offsets)]
            self.zs = torch.zeros(total, nl, dtype=torch.float64, device=dev)
            self.ss = torch.zeros(nl, nl, dtype=torch.float64, device=dev)
            self.s = torch.zeros(nl, dtype=torch.float64, device=dev)
        elif [x.shape[1] for x in feats] != self.widths:
            raise LayerwiseError(f"layer widths changed between batches: {self.widths} then {[x.shape[1] for x in feats]}")
        o = self.offsets
        s = torch.stack([(z[:, o[i]:o[i + 1]] ** 2).sum(1) for i in range(len(feats))], dim=1)  # (B, L) ‖x_i‖²
        for ell, slab in enumerate(self.gram):
            # Upper-triangular blocks only: X_ℓᵀ [X_ℓ | X_ℓ+1 | ...] (half the flops of ZᵀZ).
            slab.addmm_(z[:, o[ell]:o[ell + 1]].T, z[:, o[ell]:])
        self.n += z.shape[0]
        self.sums += z.sum(0)
        self.zs.addmm_(z.T, s)
        self.ss.addmm_(s.T, s)
        self.s += s.sum(0)

    def _tensors(self) -> list[torch.Tensor]:
        return [self.sums, *self.gram, self.zs, self.ss, self.s]

    def merge(self, other: "LinearStats") -> "LinearStats":
        """Add another LinearStats over disjoint samples (same layers) into this one."""
        if other.widths != self.widths:
            raise LayerwiseError(f"cannot merge stats over different layer widths: {self.widths} vs {other.widths}")
        for mine, theirs in zip(self._tensors(), other._tensors()):
            mine += theirs.to(mine.device)
        self.n += other.n
        return self

    def all_reduce(self, accelerator) -> "LinearStats":
        """Sum every statistic across processes (accelerate; float64 is kept, gloo supports it)."""
        n = accelerator.reduce(torch.tensor([float(self.n)], dtype=torch.float64, device=self.sums.device), "sum")
        self.n = int(n.item())
        reduced = [accelerator.reduce(t, "sum") for t in self._tensors()]
        self.sums, self.zs, self.ss, self.s = reduced[0], reduced[-3], reduced[-2], reduced[-1]
        self.gram = reduced[1:-3]
        return self

    def means(self) -> list[torch.Tensor]:
        """Per-layer mean feature vectors (e.g. the global means for a second cosine pass)."""
        o = self.offsets
        return [self.sums[o[i]:o[i + 1]] / self.n for i in range(len(self.widths))]

    def _block(self, i: int, j: int) -> torch.Tensor:
        """X_iᵀX_j for i <= j (uncentred), read from the upper slabs."""
        o = self.offsets
        return self.gram[i][:, o[j] - o[i]:o[j + 1] - o[i]]

    def _pairs(self):
        nl = len(self.widths)
        return [(i, j) for i in range(nl) for j in range(i, nl)]

    def _symmetric(self, vals: dict) -> np.ndarray:
        nl = len(self.widths)
        m = np.zeros((nl, nl))
        for (i, j), v in vals.items():
            m[i, j] = m[j, i] = v
        return m

    def constant_layers(self) -> np.ndarray:
        """Layers whose features do not vary across samples. From sums, a constant layer's centred
        variance tr(C_ii) = Σ‖x‖² − ‖S‖²/n is rounding noise, not zero, so compare it relatively."""
        o = self.offsets
        total = self.s.cpu().numpy()
        centred = np.array([(self.s[i] - self.sums[o[i]:o[i + 1]].square().sum() / self.n).item()
                            for i in range(len(self.widths))])
        return centred <= 1e-12 * np.maximum(total, np.finfo(np.float64).tiny)

    def cka(self) -> np.ndarray:
        """Biased linear CKA, L×L: ‖C_ij‖²_F / (‖C_ii‖_F ‖C_jj‖_F), C_ij = X_iᵀX_j - S_i S_jᵀ/n."""
        if self.n < 2:
            raise LayerwiseError(f"CKA needs at least 2 samples, got {self.n}")
        o = self.offsets
        sums = [self.sums[o[i]:o[i + 1]] for i in range(len(self.widths))]
        hs = {(i, j): ((self._block(i, j) - torch.outer(sums[i], sums[j]) / self.n) ** 2).sum().item()
              for i, j in self._pairs()}
        m = self._symmetric(hs)
        d = np.where(self.constant_layers(), 0.0, np.diag(m))
        return safe_ratio(m, d, d, "features are constant across samples (e.g. [CLS] at the embedding layer)")

    def cka_debiased(self) -> np.ndarray:
        """Debiased linear CKA, L×L, from the unbiased HSIC terms derived exactly from the stats:
        tr(K̃L̃) = ‖XᵀY‖²_F - Σ s^x s^y;  1ᵀK̃1 = ‖Sx‖² - Σ s^x;
        1ᵀK̃L̃1 = Sxᵀ(XᵀY)Sy - Sy·Σ y_i s_i^x - Sx·Σ x_i s_i^y + Σ s^x s^y."""
        n = self.n
        _need4(n)
        o = self.offsets
        sums = [self.sums[o[i]:o[i + 1]] for i in range(len(self.widths))]
        zs = [self.zs[o[i]:o[i + 1]] for i in range(len(self.widths))]
        sk = [(sums[i] @ sums[i] - self.s[i]).item() for i in range(len(self.widths))]
        hs = {}
        for i, j in self._pairs():
            b = self._block(i, j)
            tr = (b ** 2).sum() - self.ss[i, j]
            kl = sums[i] @ b @ sums[j] - sums[j] @ zs[j][:, i] - sums[i] @ zs[i][:, j] + self.ss[i, j]
            hs[i, j] = _hsic_u_terms(tr.item(), sk[i], sk[j], kl.item(), n)
        m = self._symmetric(hs)
        d = np.where(self.constant_layers(), 0.0, np.diag(m))
        return safe_ratio(m, d, d, "unbiased HSIC(K, K) is not positive (constant features or too few samples)")


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
    _need4(n, "minibatch CKA")
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
    return _hsic_u_terms(flat @ flat.T, tot[:, None], tot[None, :], rows @ rows.T, n)


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
