"""Per-layer scores: [Σ loss, Σ correct, count] per (readout, layer), their metrics (accuracy, loss,
perplexity = exp(mean CE), and the task's own: F1, Matthews, Pearson, Spearman from ``data.metrics``), and
``evaluate_layers``, the one scoring loop over a loader, which the trainer runs after every epoch and
``evaluation`` runs for ``analyze``, ``gen-eval`` and the rest. The final norm is recomputed on each layer's own
features (``Readout``), never the last layer's statistics.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.data.batches import Batch, to_device
from layerwise.data.metrics import REGRESSION_METRICS, layer_task_metrics
from layerwise.stack import LayerStack, StackState
from layerwise.training.losses import ReadoutFn, readout_targets


def _predictions(out: Tensor, task: str) -> Tensor:
    """What a task's metrics compare with the targets: the class (argmax) or the regression value."""
    out = out.detach()
    return out.double() if task == "regression" else out.argmax(-1).double()


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
    """``metrics`` plus each of the task's metrics per row (``data.metrics``; accuracy is in already)."""
    if preds is None or targets is None or task not in ("classification", "regression"):
        return metrics
    wanted = [n for n in (names or default_metrics(task)) if n not in metrics]
    if task == "regression":
        wanted = [n for n in wanted if n in REGRESSION_METRICS]
    return {**metrics, **layer_task_metrics(preds.numpy(), targets.numpy(), wanted)}


def predictions_record(kept: dict[str, Tensor], task: str) -> dict[str, object]:
    """``predictions.json``: the shared readout's prediction for every evaluation sample after every layer
    (``predictions[ℓ][i]``, a class id or a regression value) and the ``targets``, so any task metric can be
    recomputed on a resample of the samples (``reproduce.verdicts``)."""
    cast = (lambda x: x) if task == "regression" else int
    return {"task": task, "targets": [cast(v) for v in kept["targets"].tolist()],
            "predictions": [[cast(v) for v in row] for row in kept["predictions"].tolist()]}


@torch.no_grad()
def evaluate_layers(stack: LayerStack, loader: Iterable[Batch], exit_heads: nn.ModuleList | None = None, *,
                    device: torch.device, rank: int = 0, world: int = 1, reduce: Callable | None = None,
                    autocast=nullcontext, metrics: Sequence[str] | None = None, lens=None,
                    keep: dict[str, Tensor] | None = None) -> dict[str, list[float]]:
    """Per-layer shared-readout loss, accuracy and task ``metrics`` for layers 0..L (and each exit head for
    1..L, as ``exit_<name>``); with ``lens`` (a ``stack.Lens``) each layer is read through it. ``keep``, if
    given, receives the shared readout's ``predictions`` (L+1, N) and the ``targets`` (N,) of a classifier or
    regression head, in data-set order (for a bootstrap of the task metric over test samples).

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
                readouts = [stack.readout] * n if lens is None else lens.readouts(stack)
                pairs = list(zip(readouts, states))
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
    if keep is not None and preds is not None:
        keep.update(predictions=preds[:n].cpu(), targets=targets.cpu())
    if exit_heads is not None:
        out.update({f"exit_{k}": v[n:] for k, v in out_metrics.items()})
    return out
