"""Sample-wise cosine similarity between layers (the project's main measure).

Each layer is centred by its global mean over samples, then
    COS_i(a, b) = ⟨x_i - μ_a, y_i - μ_b⟩ / (‖x_i - μ_a‖ ‖y_i - μ_b‖),   COS(a, b) = mean_i COS_i.
A sample whose centred vector has zero norm has no cosine: it is NaN per sample, left out of the
mean (with a warning), and a layer with no valid sample gives NaN.
"""

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures._util import f64, same_n, warn_undefined


def _check_widths(feats) -> None:
    widths = [x.shape[1] for x in feats]
    for a, d in enumerate(widths):
        if d != widths[0]:
            raise LayerwiseError(f"COS needs equal widths: layer 0 has {widths[0]}, layer {a} has {d}; "
                                 "use CKA for different widths")


def _unit_rows(x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        _check_widths([m[None] for m in means])
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
        _check_widths(batch_feats)
        u, valid = zip(*(_unit_rows(x, m) for x, m in zip(batch_feats, self.means)))
        u, valid = torch.stack(u), torch.stack(valid).to(torch.float64)  # (L, B, d), (L, B)
        flat = u.reshape(len(u), -1)
        # Stacked product: Σ_i u_a,i·u_b,i for all (a, b) in one matmul.
        self.sums += (flat @ flat.T).to(self.sums.device)
        self.counts += (valid @ valid.T).to(self.sums.device)
        self.n += u.shape[1]
        per = (u * u[-1]).sum(-1).T  # (B, L) cosine of each layer vs the last
        self.vs_last.append(torch.where((valid * valid[-1]).T > 0, per, torch.nan).cpu())

    def all_reduce(self, accelerator) -> "CosineAccumulator":
        """Sum the L×L sums and counts across processes; per-sample values stay local to each process."""
        self.sums = accelerator.reduce(self.sums, "sum")
        self.counts = accelerator.reduce(self.counts, "sum")
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.sums.device)
        self.n = int(accelerator.reduce(n, "sum").item())
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


def cosine_matrix(feats: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """In-memory COS: (mean L×L matrix, per-sample COS vs the last layer (N, L))."""
    _check_widths(feats)
    acc = CosineAccumulator([f64(x).mean(0) for x in feats])
    for start in range(0, feats[0].shape[0], 4096):  # chunks bound the (L, B, d) float64 temporary
        acc.update([x[start:start + 4096] for x in feats])
    return acc.result()


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean sample-wise cosine of globally centred features of two equal-width layers."""
    same_n(x, y)
    return float(cosine_matrix([x, y])[0][0, 1])


def cosine_pairs(feats_a, feats_b=None) -> np.ndarray:
    """All-layer COS matrix (cross block when feats_b is given)."""
    feats = list(feats_a) + list(feats_b or [])
    m = cosine_matrix(feats)[0]
    return m if feats_b is None else m[:len(feats_a), len(feats_a):]
