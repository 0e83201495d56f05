"""Streaming statistics: additive sums over batches from which COS and exact linear CKA
follow, with memory independent of the number of samples N.

- ``LinearStats``: n, Σz, the upper blocks of ZᵀZ and the extra sums unbiased HSIC needs (CKA, debiased CKA);
- ``CosineAccumulator``: given the global per-layer means, Σᵢ cos(xᵢ − μ_a, yᵢ − μ_b) for all layer pairs.
"""

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, safe_ratio, warn_undefined


def hsic_u_terms(tr, sk, sl, kl, n):
    """Unbiased HSIC from tr(K̃L̃), 1ᵀK̃1, 1ᵀL̃1, 1ᵀK̃L̃1 (works elementwise on arrays)."""
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 * kl / (n - 2)) / (n * (n - 3))


def need4(n: int, what: str = "debiased CKA") -> None:
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

    def all_reduce(self) -> "LinearStats":
        """Sum the statistics of every process (``layerwise.parallel``; a no-op in one process): all of them are
        additive float64 sums over samples, so the reduced statistics are those of the whole data set."""
        from layerwise.parallel import reduce_sum

        n = torch.tensor([self.n], dtype=torch.float64, device=self.sums.device)
        n, self.sums, self.gram, self.zs, self.ss, self.s = reduce_sum([n, self.sums, self.gram, self.zs, self.ss,
                                                                         self.s])
        self.n = int(n.item())
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
        need4(n)
        o = self.offsets
        sums = [self.sums[o[i]:o[i + 1]] for i in range(len(self.widths))]
        zs = [self.zs[o[i]:o[i + 1]] for i in range(len(self.widths))]
        sk = [(sums[i] @ sums[i] - self.s[i]).item() for i in range(len(self.widths))]
        hs = {}
        for i, j in self._pairs():
            b = self._block(i, j)
            tr = (b ** 2).sum() - self.ss[i, j]
            kl = sums[i] @ b @ sums[j] - sums[j] @ zs[j][:, i] - sums[i] @ zs[i][:, j] + self.ss[i, j]
            hs[i, j] = hsic_u_terms(tr.item(), sk[i], sk[j], kl.item(), n)
        m = self._symmetric(hs)
        d = np.where(self.constant_layers(), 0.0, np.diag(m))
        return safe_ratio(m, d, d, "unbiased HSIC(K, K) is not positive (constant features or too few samples)")


def check_equal_widths(feats) -> None:
    widths = [x.shape[1] for x in feats]
    for a, d in enumerate(widths):
        if d != widths[0]:
            raise LayerwiseError(f"COS needs equal widths: layer 0 has {widths[0]}, layer {a} has {d}; "
                                 "use CKA for different widths")


def unit_rows(x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred rows scaled to unit norm (zero where the norm is zero) and the validity mask."""
    xc = f64(x) - f64(mean).to(x.device)
    norm = xc.norm(dim=1, keepdim=True)
    valid = norm[:, 0] > 0
    return torch.where(norm > 0, xc / norm.clamp_min(torch.finfo(torch.float64).tiny), 0.0), valid


class CosineAccumulator:
    """Streaming COS over batches, given precomputed global per-layer means (second pass).

    Keeps L×L sums of per-sample cosines and counts of valid samples, plus the per-sample
    cosines against the last layer (N floats per layer, for box plots)."""

    def __init__(self, means: list[torch.Tensor]) -> None:
        check_equal_widths([m[None] for m in means])
        self.means = [f64(m) for m in means]
        nl = len(means)
        self.sums = torch.zeros(nl, nl, dtype=torch.float64, device=self.means[0].device)
        self.counts = torch.zeros_like(self.sums)
        self.n = 0
        self.vs_last: list[torch.Tensor] = []

    def update(self, batch_feats: list[torch.Tensor]) -> None:
        """Add per-sample cosines for one batch: batch_feats[ℓ] is (B, d)."""
        if len(batch_feats) != len(self.means):
            raise LayerwiseError(f"expected {len(self.means)} layers, got {len(batch_feats)}")
        check_equal_widths(batch_feats)
        u, valid = zip(*(unit_rows(x, m) for x, m in zip(batch_feats, self.means)))
        u, valid = torch.stack(u), torch.stack(valid).to(torch.float64)  # (L, B, d), (L, B)
        flat = u.reshape(len(u), -1)
        # Stacked product: Σ_i u_a,i·u_b,i for all (a, b) in one matmul.
        self.sums += (flat @ flat.T).to(self.sums.device)
        self.counts += (valid @ valid.T).to(self.sums.device)
        self.n += u.shape[1]
        per = (u * u[-1]).sum(-1).T  # (B, L) cosine of each layer vs the last
        self.vs_last.append(torch.where((valid * valid[-1]).T > 0, per, torch.nan).cpu())

    def all_reduce(self) -> "CosineAccumulator":
        """Sum the cosine sums and counts of every process and gather the per-sample cosines in rank order (the
        data set's order for contiguous shards; ``layerwise.parallel``)."""
        from layerwise.parallel import gather_rows, reduce_sum

        n = torch.tensor([self.n], dtype=torch.float64, device=self.sums.device)
        n, self.sums, self.counts = reduce_sum([n, self.sums, self.counts])
        self.n = int(n.item())
        if self.vs_last:
            self.vs_last = [gather_rows(torch.cat(self.vs_last))]
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean COS matrix (L, L), per-sample COS vs the last layer (N, L))."""
        sums, counts = self.sums.cpu().numpy(), self.counts.cpu().numpy()
        per = torch.cat(self.vs_last).numpy() if self.vs_last else np.zeros((0, len(sums)))
        short = np.flatnonzero(np.diag(counts) < self.n)
        if len(short):
            warn_undefined(f"layer(s) {short.tolist()}", "some samples have zero norm after centring "
                           "(e.g. constant features); their cosine is null and they are left out of the mean")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan), per
