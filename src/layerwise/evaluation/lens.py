"""Per-layer scores of several lenses on the same sequences, kept per sequence so that intervals can be
bootstrapped over test sequences (``layerwise lens``).

For sequence (or sample) i and layer ℓ: nllᵢₗ = Σₜ CE(lens(hˡ)ₜ, yₜ) over its predicted positions, correctᵢₗ the
number of them predicted right, countᵢ their number. Perplexity_ℓ = exp(Σᵢ nllᵢₗ / Σᵢ countᵢ), accuracy_ℓ =
Σᵢ correctᵢₗ / Σᵢ countᵢ (exactly the token-level numbers of ``training.scores``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.data.batches import Batch, to_device
from layerwise.errors import LayerwiseError
from layerwise.stack import LayerStack, Lens


def _per_row(logits: Tensor, labels: Tensor, mask: Tensor | None, task: str) -> tuple[Tensor, Tensor, Tensor]:
    """(nll, correct, count) per row of the batch: next-token positions for a language model, else one sample."""
    logits = logits.float()
    if task == "lm":
        logits, targets = logits[:, :-1], labels[:, 1:]
        keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:].bool()
        ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        right = logits.argmax(-1) == targets
        return (ce * keep).sum(1).double(), (right & keep).sum(1).double(), keep.sum(1).double()
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ce.double(), (logits.argmax(-1) == labels).double(), torch.ones_like(ce, dtype=torch.float64)


@torch.no_grad()
def sequence_scores(stack: LayerStack, lenses: Sequence[Lens], batches: Iterable[Batch], device) -> dict[str, Tensor]:
    """``nll`` and ``correct`` (K lenses, L+1 layers, N sequences) and ``count`` (N,), float64 on the CPU."""
    if stack.task not in ("lm", "classification"):
        raise LayerwiseError(f"a {stack.task} model has no per-token or per-class loss to score per layer")
    nll, correct, count = [], [], []
    for batch in batches:
        batch = to_device(batch, device)
        states = list(stack.states(batch))
        per = [[_per_row(lens.logits(stack, i, s.h, s.mask), batch["labels"], s.mask, stack.task)
                for i, s in enumerate(states)] for lens in lenses]
        nll.append(torch.stack([torch.stack([p[0] for p in row]) for row in per]).cpu())
        correct.append(torch.stack([torch.stack([p[1] for p in row]) for row in per]).cpu())
        count.append(per[0][0][2].cpu())
    if not count:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    return {"nll": torch.cat(nll, -1), "correct": torch.cat(correct, -1), "count": torch.cat(count)}


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over n independent units (test sequences): ``statistic(idx)`` maps a (B, n) array of
    resampled unit indices to (B, …) values; returns the (low, high) quantiles (1 ∓ level)/2 of the B draws
    (Efron & Tibshirani 1993, ch. 13). Paired statistics resample the same units for every quantity."""
    rng = np.random.default_rng(seed)
    draws = statistic(rng.integers(0, n, size=(resamples, n)))
    a = (1 - level) / 2
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)


def layer_summary(nll: np.ndarray, correct: np.ndarray, count: np.ndarray, resamples: int = 1000,
                  seed: int = 0) -> dict[str, list]:
    """Per layer (rows of nll, correct: (L+1, N)): perplexity exp(Σnll/Σcount) and accuracy Σcorrect/Σcount with
    95 % percentile-bootstrap intervals over the N sequences."""
    total = count.sum()

    def stat(idx):
        c = count[idx].sum(-1)  # (B,)
        return np.stack([np.exp(nll[:, idx].sum(-1) / c), correct[:, idx].sum(-1) / c], -1)  # (L+1, B, 2)

    lo, hi = bootstrap(lambda idx: np.moveaxis(stat(idx), 1, 0), len(count), resamples, seed)
    return {"perplexity": np.exp(nll.sum(-1) / total).tolist(), "perplexity_interval": np.stack([lo[:, 0], hi[:, 0]], -1).tolist(),
            "accuracy": (correct.sum(-1) / total).tolist(), "accuracy_interval": np.stack([lo[:, 1], hi[:, 1]], -1).tolist(),
            "loss": (nll.sum(-1) / total).tolist()}


def mean_log_ppl_gap(nll_a: np.ndarray, nll_b: np.ndarray, count: np.ndarray, layers: Sequence[int],
                     resamples: int = 1000, seed: int = 0) -> dict:
    """Δ = mean over ``layers`` of (log ppl_a − log ppl_b) on the same N sequences, log ppl_ℓ = Σnll_ℓ/Σcount,
    with a paired 95 % bootstrap interval over the sequences: Δ > 0 means b reads those layers better."""
    a, b, layers = nll_a[list(layers)], nll_b[list(layers)], list(layers)

    def stat(idx):
        c = count[idx].sum(-1)
        return ((a[:, idx].sum(-1) - b[:, idx].sum(-1)) / c).mean(0)  # (B,)

    lo, hi = bootstrap(stat, len(count), resamples, seed)
    mean = float(((a.sum(-1) - b.sum(-1)) / count.sum()).mean())
    return {"mean": mean, "interval": [float(lo), float(hi)], "layers": layers,
            "method": "bootstrap over test sequences (paired)"}


__all__ = ["bootstrap", "layer_summary", "mean_log_ppl_gap", "sequence_scores"]
