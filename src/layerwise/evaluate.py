"""Layer-wise readout evaluation: the model's own readout applied after every layer.

Classifiers: accuracy and cross-entropy of readout(hˡ) for ℓ = 0..L.
Language models: next-token accuracy and perplexity exp(mean CE) of readout(hˡ), per token, padding excluded.
The final norm is recomputed on each layer's own features (``Readout``), never the last layer's statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.capture import CapturedBatch


def lm_targets(logits: Tensor, input_ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Shift for next-token prediction: logits at t predict token t+1; padding targets dropped."""
    logits, targets = logits[:, :-1], input_ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return logits[keep], targets[keep]


class LayerwiseEval:
    """Accumulates per-layer loss sums and correct counts over batches."""

    def __init__(self, task: str):
        self.task = task
        self.loss_sum: Tensor | None = None
        self.correct: Tensor | None = None
        self.count = 0

    def update(self, batch: CapturedBatch) -> None:
        if batch.labels is None or self.task == "encoder":  # no head: nothing to score
            return
        losses, corrects = [], []
        for state in batch.states:
            logits = batch.stack.readout(state.h, state.mask)
            if self.task == "lm":
                logits, targets = lm_targets(logits, batch.labels, state.mask)
            else:
                targets = batch.labels
            losses.append(F.cross_entropy(logits.float(), targets, reduction="sum"))
            corrects.append((logits.argmax(-1) == targets).sum())
        loss, correct = torch.stack(losses).double().cpu(), torch.stack(corrects).cpu()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.correct = correct if self.correct is None else self.correct + correct
        self.count += int(targets.numel())

    def result(self) -> dict[str, list[float]]:
        if not self.count:
            return {}
        loss = (self.loss_sum / self.count).tolist()
        out = {"accuracy": (self.correct.double() / self.count).tolist(), "loss": loss}
        if self.task == "lm":
            out["perplexity"] = [math.exp(min(x, 700.0)) for x in loss]
        return out
