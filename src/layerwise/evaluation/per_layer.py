"""Per-layer scoring for evaluation: ``LayerScores`` (``analyze``'s accumulator over captured batches),
``output_sums`` (the model's own output, for ``connect``) and ``layer_logits`` (every layer's logits, for
``exit``, transfer and LP-FT). The sums and metrics they share with training-time evaluation are
``training.scores``; the targets and loss, ``training.losses``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from layerwise.data.batches import Batch, model_inputs
from layerwise.errors import LayerwiseError
from layerwise.stack import LayerStack, Lens, StackState, layer_readouts
from layerwise.training.scores import layer_sums, sums_to_metrics, with_task_metrics


class LayerScores:
    """Per-layer loss, accuracy and task metrics of the shared readout, accumulated over captured batches
    (``analyze``)."""

    def __init__(self, task: str, metrics: Sequence[str] | None = None, lens: Lens | None = None):
        self.task, self.metrics, self.lens = task, metrics, lens
        self.sums: Tensor | None = None
        self.preds: list[Tensor] = []
        self.targets: list[Tensor] = []

    def update(self, stack: LayerStack, states: Sequence[StackState], labels: Tensor | None) -> None:
        if labels is None or self.task == "encoder":  # no head: nothing to score
            return
        readouts = [stack.readout] * len(states) if self.lens is None else self.lens.readouts(stack, range(len(states)))
        part = layer_sums(zip(readouts, states), labels, self.task, self.preds).cpu()
        self.sums = part if self.sums is None else self.sums + part
        if self.task != "lm":
            self.preds[-1] = self.preds[-1].cpu()
            self.targets.append(labels.double().cpu())

    def all_reduce(self) -> "LayerScores":
        """Sum every process's loss and count sums and gather its predictions and targets in rank order, the data
        set's for contiguous shards (``layerwise.parallel``; a no-op in one process)."""
        from layerwise.parallel import gather_rows, reduce_sum

        if self.sums is not None:
            self.sums = reduce_sum(self.sums)
        if self.preds:
            self.preds = [gather_rows(torch.cat(self.preds, dim=1), dim=1)]
        if self.targets:
            self.targets = [gather_rows(torch.cat(self.targets))]
        return self

    def result(self) -> dict[str, list[float]]:
        if self.sums is None:
            return {}
        preds = torch.cat(self.preds, dim=1) if self.preds else None
        targets = torch.cat(self.targets) if self.targets else None
        return with_task_metrics(sums_to_metrics(self.sums, self.task), preds, targets, self.task, self.metrics)


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
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    return total


@torch.inference_mode()
def layer_logits(stack: LayerStack, batches: Iterable[Batch], exit_heads: nn.ModuleList | None = None,
                 lens: Lens | None = None) -> Tensor:
    """(L, N, C) logits of the readout serving each layer ℓ = 1..L (a multi-exit model's own heads, else the
    shared readout, through ``lens`` when given), one forward per batch, on the CPU."""
    readouts, per_batch = layer_readouts(stack, exit_heads, lens), []
    for batch in batches:
        states = list(stack.states(model_inputs(batch)))[1:]
        per_batch.append(torch.stack([readouts[i](s.h, s.mask).float().cpu() for i, s in enumerate(states)]))
    if not per_batch:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    return torch.cat(per_batch, dim=1)


def gathered_layer_logits(stack: LayerStack, batches: list[Batch], exit_heads: nn.ModuleList | None = None,
                          lens: Lens | None = None) -> Tensor:
    """``layer_logits`` of a data-parallel pass: each process scores its contiguous shard of ``batches`` and the
    (L, N, C) logits of all of them are gathered in data-set order (``layerwise.parallel``; one process: all)."""
    from layerwise.parallel import gather_rows, shard_list

    mine = shard_list(batches)
    return gather_rows(layer_logits(stack, mine, exit_heads, lens) if mine else None, dim=1)
