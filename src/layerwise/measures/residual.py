"""Residual analysis: with hˡ⁺¹ = hˡ + f(hˡ), how large and how aligned is each block's update.

Per block ℓ (averaged over samples, on the pooled token):
    norm_ratio = ‖hˡ‖ / ‖f(hˡ)‖,   cos_update = cos(hˡ, f(hˡ)),   cos_adjacent = cos(hˡ, hˡ⁺¹)
"""

from __future__ import annotations

import torch
from torch import Tensor


class ResidualStats:
    """Streaming sums of the three per-block quantities over samples."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None
        self.n = 0

    def update(self, feats: list[Tensor]) -> None:
        rows = []
        for h, nxt in zip(feats[:-1], feats[1:]):
            h, nxt = h.double(), nxt.double()
            f = nxt - h
            h_norm, f_norm = h.norm(dim=1), f.norm(dim=1)
            eps = torch.finfo(torch.float64).tiny
            rows.append(torch.stack([
                h_norm / f_norm.clamp_min(eps),
                (h * f).sum(1) / (h_norm * f_norm).clamp_min(eps),
                (h * nxt).sum(1) / (h_norm * nxt.norm(dim=1)).clamp_min(eps),
            ]).sum(1))
        batch = torch.stack(rows).cpu()
        self.sums = batch if self.sums is None else self.sums + batch
        self.n += feats[0].shape[0]

    def all_reduce(self) -> "ResidualStats":
        """Sum the sums and counts of every process (``layerwise.parallel``; a no-op in one process)."""
        from layerwise.parallel import reduce_sum

        n = torch.tensor([self.n], dtype=torch.float64)
        n, self.sums = reduce_sum([n, self.sums])
        self.n = int(n.item())
        return self

    def result(self) -> dict[str, list[float]]:
        mean = (self.sums / self.n).T.tolist()
        return {"norm_ratio": mean[0], "cos_update": mean[1], "cos_adjacent": mean[2]}
