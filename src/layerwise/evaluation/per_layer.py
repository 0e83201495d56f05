"""Per-layer scoring: the one place that turns a readout's output after layer ℓ into targets, a loss and
a metric. Training objectives, ``analyze``, training-time evaluation and ``exit`` all go through it, so a
new task type (a regression head, sentence pairs) is added here once.

Classifiers: CE(readout(hˡ), y) and accuracy. Language models: the same per token with the next-token
shift, padding excluded, and perplexity exp(mean CE). The final norm is recomputed on each layer's own
features (``Readout``), never the last layer's statistics.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.data.batches import Batch, model_inputs, to_device
from layerwise.errors import LayerwiseError
from layerwise.stack import LayerStack, StackState, exit_readouts

ReadoutFn = Callable[[Tensor, "Tensor | None"], Tensor]


def lm_targets(logits: Tensor, input_ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Shift for next-token prediction: logits at t predict token t+1; padding targets dropped."""
    logits, targets = logits[:, :-1], input_ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return logits[keep], targets[keep]


def readout_targets(logits: Tensor, labels: Tensor, mask: Tensor | None, task: str) -> tuple[Tensor, Tensor]:
    """(predictions, targets) row-aligned for the task: per token and shifted for language models."""
    return lm_targets(logits, labels, mask) if task == "lm" else (logits, labels)


def dense_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean CE of materialised logits (float32 for stability under autocast)."""
    return F.cross_entropy(logits.float(), targets)


def layer_losses(readouts: Sequence[ReadoutFn], hs: Sequence[Tensor], mask: Tensor | None, labels: Tensor, task: str,
                 loss: Callable[[Tensor, Tensor], Tensor] = dense_ce) -> Tensor:
    """(n,) vector of loss(Rₗ(hˡ), y) for the given readouts and layers; differentiable (training).

    Classification readouts pool one token first, so this costs a head per layer, not a sequence. Swap
    ``loss`` for a chunked-vocabulary CE to avoid materialising (B, T, V) logits per layer.
    """
    return torch.stack([loss(*readout_targets(r(h, mask), labels, mask, task)) for r, h in zip(readouts, hs)])


def layer_sums(rows: Iterable[tuple[ReadoutFn, StackState]], labels: Tensor, task: str) -> Tensor:
    """(n, 3) float64 sums per (readout, layer) row: [Σ CE, Σ correct, count] (evaluation; summable
    across batches and processes)."""
    out = []
    for readout, state in rows:
        logits, targets = readout_targets(readout(state.h, state.mask).float(), labels, state.mask, task)
        out.append(torch.stack([F.cross_entropy(logits, targets, reduction="sum"),
                                (logits.argmax(-1) == targets).sum().float(),
                                torch.tensor(float(targets.numel()), device=logits.device)]))
    return torch.stack(out).double()


def sums_to_metrics(sums: Tensor, task: str) -> dict[str, list[float]]:
    """accuracy = Σ correct / count and loss = Σ CE / count per row (and perplexity = exp(loss) for LMs)."""
    count = sums[:, 2].clamp_min(1)
    loss = (sums[:, 0] / count).tolist()
    out = {"accuracy": (sums[:, 1] / count).tolist(), "loss": loss}
    if task == "lm":
        out["perplexity"] = [math.exp(min(x, 700.0)) for x in loss]
    return out


class LayerScores:
    """Per-layer loss and accuracy of the shared readout, accumulated over captured batches (``analyze``)."""

    def __init__(self, task: str):
        self.task = task
        self.sums: Tensor | None = None

    def update(self, stack: LayerStack, states: Sequence[StackState], labels: Tensor | None) -> None:
        if labels is None or self.task == "encoder":  # no head: nothing to score
            return
        part = layer_sums(((stack.readout, s) for s in states), labels, self.task).cpu()
        self.sums = part if self.sums is None else self.sums + part

    def result(self) -> dict[str, list[float]]:
        return {} if self.sums is None else sums_to_metrics(self.sums, self.task)


@torch.no_grad()
def evaluate_layers(stack: LayerStack, loader: Iterable[Batch], exit_heads: nn.ModuleList | None = None, *,
                    device: torch.device, rank: int = 0, world: int = 1, reduce: Callable | None = None,
                    autocast=nullcontext) -> dict[str, list[float]]:
    """Per-layer shared-readout loss and accuracy for layers 0..L (and each exit head for 1..L).

    Batches are dealt round-robin to processes and the sums reduced with ``reduce``, so the result does
    not depend on the number of processes.
    """
    was = stack.training
    stack.eval()
    n = stack.num_layers + 1
    rows = n + (len(exit_heads) if exit_heads is not None else 0)
    sums = torch.zeros(rows, 3, dtype=torch.float64, device=device)
    try:
        for i, batch in enumerate(loader):
            if i % world != rank:
                continue
            batch = to_device(batch, device)
            with autocast():
                states = list(stack.states(batch))
                pairs = [(stack.readout, s) for s in states]
                if exit_heads is not None:
                    pairs += list(zip(exit_heads, states[1:]))
                sums += layer_sums(pairs, batch["labels"], stack.task)
    finally:
        stack.train(was)
    if reduce is not None:
        sums = reduce(sums)
    metrics = sums_to_metrics(sums.cpu(), stack.task)
    out = {k: v[:n] for k, v in metrics.items()}
    if exit_heads is not None:
        out["exit_accuracy"], out["exit_loss"] = metrics["accuracy"][n:], metrics["loss"][n:]
    return out


@torch.no_grad()
def output_sums(stack: LayerStack, batches: Iterable[Batch]) -> Tensor:
    """(3,) float64 [Σ CE, Σ correct, count] of the model's own output, readout(hᴸ), summed over every sample
    (every predicted token for language models) of ``batches``: exact per-sample means, whatever the batch
    sizes. The stack must be in eval mode."""
    total = torch.zeros(3, dtype=torch.float64)
    for batch in batches:
        for state in stack.states(batch):
            pass
        total += layer_sums([(stack.readout, state)], batch["labels"], stack.task)[0].cpu()
    if total[2] == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    return total


@torch.inference_mode()
def layer_logits(stack: LayerStack, batches: Iterable[Batch], exit_heads: nn.ModuleList | None = None) -> Tensor:
    """(L, N, C) logits of the readout serving each layer ℓ = 1..L (a multi-exit model's own heads, else the
    shared readout), one forward per batch, on the CPU."""
    readouts, per_batch = exit_readouts(stack, exit_heads), []
    for batch in batches:
        states = list(stack.states(model_inputs(batch)))[1:]
        per_batch.append(torch.stack([readouts[i](s.h, s.mask).float().cpu() for i, s in enumerate(states)]))
    if not per_batch:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    return torch.cat(per_batch, dim=1)
