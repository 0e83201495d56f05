"""Per-layer scoring: the one place that turns a readout's output after layer ℓ into targets, a loss and
a metric. Training objectives, ``analyze``, training-time evaluation and ``exit`` all go through it, so a
new task type (a regression head, sentence pairs) is added here once.

Classifiers: CE(readout(hˡ), y), accuracy and the task's own metrics (F1, Matthews correlation; see
``evaluation.metrics``). Regression heads (one output): MSE(readout(hˡ), y) and Pearson/Spearman. Language models: the same per token with the next-token
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
from layerwise.evaluation.metrics import REGRESSION_METRICS, layer_task_metrics
from layerwise.stack import LayerStack, StackState, exit_readouts

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


def _predictions(out: Tensor, task: str) -> Tensor:
    """What a task's metrics compare with the targets: the class (argmax) or the regression value."""
    out = out.detach()
    return out.double() if task == "regression" else out.argmax(-1).double()


def layer_losses(readouts: Sequence[ReadoutFn], hs: Sequence[Tensor], mask: Tensor | None, labels: Tensor, task: str,
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """(n,) vector of loss(Rₗ(hˡ), y) for the given readouts and layers; differentiable (training).

    The loss is the task's (``task_loss``: CE, or MSE for regression) unless given. Classification readouts
    pool one token first, so this costs a head per layer, not a sequence. Swap ``loss`` for a
    chunked-vocabulary CE to avoid materialising (B, T, V) logits per layer.
    """
    loss = loss or task_loss(task)
    return torch.stack([loss(*readout_targets(r(h, mask), labels, mask, task)) for r, h in zip(readouts, hs)])


def _row(out: Tensor, targets: Tensor, task: str) -> Tensor:
    if task == "regression":
        return torch.stack([F.mse_loss(out, targets.float(), reduction="sum"), out.new_zeros(()),
                            torch.tensor(float(targets.numel()), device=out.device)])
    return torch.stack([F.cross_entropy(out, targets, reduction="sum"), (out.argmax(-1) == targets).sum().float(),
                        torch.tensor(float(targets.numel()), device=out.device)])


def layer_sums(rows: Iterable[tuple[ReadoutFn, StackState]], labels: Tensor, task: str,
               predictions: list[Tensor] | None = None) -> Tensor:
    """(n, 3) float64 sums per (readout, layer) row: [Σ CE, Σ correct, count], or [Σ squared error, 0, count]
    for regression (evaluation; summable across batches and processes). ``predictions``, if given, receives
    the (n, B) predicted classes or values of a classifier or regression head (for the task metrics)."""
    out, preds = [], []
    for readout, state in rows:
        logits, targets = readout_targets(readout(state.h, state.mask).float(), labels, state.mask, task)
        out.append(_row(logits, targets, task))
        if predictions is not None and task in ("classification", "regression"):
            preds.append(_predictions(logits, task))
    if preds:
        predictions.append(torch.stack(preds))
    return torch.stack(out).double()


def sums_to_metrics(sums: Tensor, task: str) -> dict[str, list[float]]:
    """accuracy = Σ correct / count and loss = Σ CE / count per row (and perplexity = exp(loss) for LMs;
    loss = MSE and no accuracy for regression)."""
    count = sums[:, 2].clamp_min(1)
    loss = (sums[:, 0] / count).tolist()
    out = {"loss": loss} if task == "regression" else {"accuracy": (sums[:, 1] / count).tolist(), "loss": loss}
    if task == "lm":
        out["perplexity"] = [math.exp(min(x, 700.0)) for x in loss]
    return out


def default_metrics(task: str) -> tuple[str, ...]:
    """The metrics of a task that names none: Pearson and Spearman for regression, accuracy otherwise."""
    return REGRESSION_METRICS if task == "regression" else ("accuracy",)


def task_metric_name(task: str, names: Sequence[str] | None) -> str:
    """The task's own metric (the first it names), the one a log or table reports: loss for others."""
    if task not in ("classification", "regression"):
        return "perplexity" if task == "lm" else "loss"
    return (names or default_metrics(task))[0]


def with_task_metrics(metrics: dict[str, list[float]], preds: Tensor | None, targets: Tensor | None, task: str,
                      names: Sequence[str] | None) -> dict[str, list[float]]:
    """``metrics`` plus each of the task's metrics per row (``evaluation.metrics``; accuracy is in already)."""
    if preds is None or targets is None or task not in ("classification", "regression"):
        return metrics
    wanted = [n for n in (names or default_metrics(task)) if n not in metrics]
    if task == "regression":
        wanted = [n for n in wanted if n in REGRESSION_METRICS]
    return {**metrics, **layer_task_metrics(preds.numpy(), targets.numpy(), wanted)}


class LayerScores:
    """Per-layer loss, accuracy and task metrics of the shared readout, accumulated over captured batches
    (``analyze``)."""

    def __init__(self, task: str, metrics: Sequence[str] | None = None):
        self.task, self.metrics = task, metrics
        self.sums: Tensor | None = None
        self.preds: list[Tensor] = []
        self.targets: list[Tensor] = []

    def update(self, stack: LayerStack, states: Sequence[StackState], labels: Tensor | None) -> None:
        if labels is None or self.task == "encoder":  # no head: nothing to score
            return
        part = layer_sums(((stack.readout, s) for s in states), labels, self.task, self.preds).cpu()
        self.sums = part if self.sums is None else self.sums + part
        if self.task != "lm":
            self.preds[-1] = self.preds[-1].cpu()
            self.targets.append(labels.double().cpu())

    def result(self) -> dict[str, list[float]]:
        if self.sums is None:
            return {}
        preds = torch.cat(self.preds, dim=1) if self.preds else None
        targets = torch.cat(self.targets) if self.targets else None
        return with_task_metrics(sums_to_metrics(self.sums, self.task), preds, targets, self.task, self.metrics)


@torch.no_grad()
def evaluate_layers(stack: LayerStack, loader: Iterable[Batch], exit_heads: nn.ModuleList | None = None, *,
                    device: torch.device, rank: int = 0, world: int = 1, reduce: Callable | None = None,
                    autocast=nullcontext, metrics: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Per-layer shared-readout loss, accuracy and task ``metrics`` for layers 0..L (and each exit head for
    1..L, as ``exit_<name>``).

    Batches are dealt round-robin to processes and the sums reduced with ``reduce``, so the result does
    not depend on the number of processes. The task metrics need every prediction: each process writes its
    batches' predictions at their place in a zero tensor over the whole data, and ``reduce`` sums those too.
    """
    modes = {m: m.training for m in stack.modules()}  # each module's own, not the wrapper's flag
    stack.eval()
    n = stack.num_layers + 1
    rows = n + (len(exit_heads) if exit_heads is not None else 0)
    sums = torch.zeros(rows, 3, dtype=torch.float64, device=device)
    scored = stack.task in ("classification", "regression")
    parts: list[tuple[int, Tensor, Tensor]] = []  # (offset, predictions, targets) of this process's batches
    offset = 0
    try:
        for i, batch in enumerate(loader):
            size = len(batch["labels"])
            offset += size
            if i % world != rank:
                continue
            batch = to_device(batch, device)
            with autocast():
                states = list(stack.states(batch))
                pairs = [(stack.readout, s) for s in states]
                if exit_heads is not None:
                    pairs += list(zip(exit_heads, states[1:]))
                preds: list[Tensor] = []
                sums += layer_sums(pairs, batch["labels"], stack.task, preds if scored else None)
            if scored:
                parts.append((offset - size, preds[0], batch["labels"].double()))
    finally:
        for module, mode in modes.items():
            module.training = mode
    preds = targets = None
    if scored:
        preds = torch.zeros(rows, offset, dtype=torch.float64, device=device)
        targets = torch.zeros(offset, dtype=torch.float64, device=device)
        for start, p, t in parts:
            preds[:, start:start + len(t)], targets[start:start + len(t)] = p, t
    if reduce is not None:
        sums = reduce(sums)
        if scored:
            preds, targets = reduce(preds), reduce(targets)
    out_metrics = with_task_metrics(sums_to_metrics(sums.cpu(), stack.task), None if preds is None else preds.cpu(),
                                    None if targets is None else targets.cpu(), stack.task, metrics)
    out = {k: v[:n] for k, v in out_metrics.items()}
    if exit_heads is not None:
        out.update({f"exit_{k}": v[n:] for k, v in out_metrics.items()})
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
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
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
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    return torch.cat(per_batch, dim=1)
