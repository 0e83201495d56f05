"""The training loss per layer: the one place that turns a readout's output after layer ℓ into targets and
a loss. Objectives, the Hugging Face trainer and the evaluation's sums all go through ``readout_targets``, so a
new task type (a regression head, sentence pairs) is added here once.

Classifiers: CE(readout(hˡ), y). Regression heads (one output): MSE(readout(hˡ), y). Language models: CE per
token with the next-token shift, padding excluded.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ReadoutFn = Callable[[Tensor, "Tensor | None"], Tensor]


def lm_targets(logits: Tensor, input_ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Shift for next-token prediction: logits at t predict token t+1; padding targets dropped."""
    logits, targets = logits[:, :-1], input_ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return logits[keep], targets[keep]


def readout_targets(logits: Tensor, labels: Tensor, mask: Tensor | None, task: str) -> tuple[Tensor, Tensor]:
    """(predictions, targets) row-aligned for the task: per token and shifted for language models; the one
    output and float targets for regression."""
    if task == "lm":
        return lm_targets(logits, labels, mask)
    if task == "regression":
        return logits[..., 0], labels.to(logits.dtype)
    return logits, labels


def dense_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean CE of materialised logits (float32 for stability under autocast)."""
    return F.cross_entropy(logits.float(), targets)


def dense_mse(pred: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error (1/N) Σᵢ (ŷᵢ − yᵢ)² of a regression head (float32 under autocast)."""
    return F.mse_loss(pred.float(), targets.float())


def task_loss(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The training loss of a task: MSE for regression heads, CE otherwise."""
    return dense_mse if task == "regression" else dense_ce


def layer_losses(readouts: Sequence[ReadoutFn], hs: Sequence[Tensor], mask: Tensor | None, labels: Tensor, task: str,
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """(n,) vector of loss(Rₗ(hˡ), y) for the given readouts and layers; differentiable (training).

    The loss is the task's (``task_loss``: CE, or MSE for regression) unless given. Classification readouts
    pool one token first, so this costs a head per layer, not a sequence. Swap ``loss`` for a
    chunked-vocabulary CE to avoid materialising (B, T, V) logits per layer.
    """
    loss = loss or task_loss(task)
    return torch.stack([loss(*readout_targets(r(h, mask), labels, mask, task)) for r, h in zip(readouts, hs)])
