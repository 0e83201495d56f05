"""Early exit over the layer stack: run blocks one at a time and stop each sample when its policy says so.

The runner computes only the blocks it needs. Batched, it compacts: after block ℓ the samples that exited
are dropped (``StackState.select``) and blocks ℓ+1.. run on the rest only; results are written back at each
sample's original index. Per layer it pays one readout on the pooled token (``Readout`` pools before it
normalises) and one host sync (how many samples stay), all under ``torch.inference_mode()``.

Speedups: layer-count S_layers = Σᵢ L·mᵢ / Σᵢ i·mᵢ (mᵢ = samples exiting at layer i) and wall-clock
S_wall = t(plain model forward) / t(runner), on the same batches and device.

``evaluate_exit`` is the ``layerwise exit`` report: accuracy, exit histogram, both speedups, a threshold
sweep, ε-calibration on a validation split and the minimal depth (see ``truncate.minimal_depth``).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.capture import pick_device, to_device
from layerwise.errors import LayerwiseError
from layerwise.exit_policies import ExitPolicy, make_policy
from layerwise.stack import LayerStack, Readout

Batch = dict[str, Tensor]


@dataclass
class ExitResult:
    """Per sample, in input order: predicted class, exit layer (1..L) and max softmax probability there."""

    prediction: Tensor  # (N,) long
    layer: Tensor  # (N,) long
    confidence: Tensor  # (N,) float32

    @staticmethod
    def cat(parts: Sequence[ExitResult]) -> ExitResult:
        if not parts:
            raise LayerwiseError("the data set is empty: check the data path, split and --limit")
        return ExitResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("prediction", "layer", "confidence")))

    def histogram(self, num_layers: int) -> list[int]:
        """m_ℓ for ℓ = 1..L."""
        return torch.bincount(self.layer.cpu(), minlength=num_layers + 1)[1:].tolist()


def layer_speedup(histogram: Sequence[int]) -> float:
    """Σ L·mᵢ / Σ i·mᵢ with layers i = 1..L."""
    L = len(histogram)
    used = sum(i * m for i, m in enumerate(histogram, start=1))
    return L * sum(histogram) / used if used else float("nan")


def exit_heads_of(stack: LayerStack, exit_heads: nn.ModuleList | None) -> list[nn.Module]:
    """The readout serving each layer 1..L: a multi-exit model's own heads, else the shared readout."""
    if exit_heads is None:
        return [stack.readout] * stack.num_layers
    if len(exit_heads) != stack.num_layers:
        raise LayerwiseError(f"{len(exit_heads)} exit heads for {stack.num_layers} layers: re-save the model")
    return list(exit_heads)


def fast_readout(r: nn.Module) -> Callable[[Tensor, Tensor | None], Tensor]:
    """A cls-pooled ``Readout(LayerNorm, Linear)`` as two functional calls on token 0, linear(layer_norm(h[:, 0])):
    the same arithmetic without nn.Module dispatch (~10 µs a call on CPU, which matters at batch size 1).
    Any other readout is returned unchanged."""
    if not (isinstance(r, Readout) and r.pool_fn is None and r.pooling == "cls" and type(r.norm) is nn.LayerNorm
            and type(r.head) is nn.Linear):
        return r
    norm, head = r.norm, r.head

    def readout(h: Tensor, mask: Tensor | None = None) -> Tensor:
        x = F.layer_norm(h[:, 0], norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return F.linear(x, head.weight, head.bias)

    return readout


class EarlyExitRunner:
    """Run ``stack`` with early exit under ``policy``; ``runner(batch) -> ExitResult``.

    >>> runner = EarlyExitRunner(bundle.stack, ConfidencePolicy(0.9), bundle.exit_heads)
    >>> out = runner(batch)      # out.prediction, out.layer, out.confidence
    """

    def __init__(self, stack: LayerStack, policy: ExitPolicy, exit_heads: nn.ModuleList | None = None,
                 compact: bool = True):
        self.stack, self.policy, self.compact = stack, policy, compact
        self.lo, self.hi = policy.check(stack)
        self.heads = [fast_readout(h) for h in exit_heads_of(stack, exit_heads)]

    @torch.inference_mode()
    def __call__(self, inputs: Batch) -> ExitResult:
        stack, policy, heads, hi = self.stack, self.policy, self.heads, self.hi
        state = stack.embed(inputs)
        n, device = state.h.shape[0], state.h.device
        memory = policy.start(n, device)
        if not self.compact:
            return self._reference(state, memory)
        where = None  # original index of each row still in flight; None while that is all of 0..n-1
        parts: list[tuple[Tensor, Tensor, Tensor, int]] = []  # (rows, prediction, confidence, layer) per exit
        for i in range(hi):
            state = stack.block(i, state)
            if i + 1 < self.lo:
                continue
            d = policy.decide(heads[i](state.h, state.mask), memory)
            rows = state.h.shape[0]
            if i + 1 == hi:  # everyone left exits here
                parts.append((where, d.prediction, d.confidence, hi))
                break
            stay = (0 if d.exit.item() else 1) if rows == 1 else rows - int(d.exit.sum())  # the one host sync
            if stay == rows:
                continue
            # A stable sort puts staying rows first, in their original relative order, without a second sync.
            order = torch.argsort(d.exit.to(torch.uint8), stable=True)
            out, keep = order[stay:], order[:stay]
            idx = out if where is None else where[out]
            parts.append((idx, d.prediction[out], d.confidence[out], i + 1))
            if stay == 0:
                break
            where = keep if where is None else where[keep]
            state = state.select(keep)
            memory = {k: v[keep] for k, v in memory.items()}
        return self._assemble(parts, n, device)

    @staticmethod
    def _assemble(parts, n: int, device: torch.device) -> ExitResult:
        if len(parts) == 1 and parts[0][0] is None:  # nobody exited early: already in order
            _, pred, conf, ell = parts[0]
            return ExitResult(pred, torch.full((n,), ell, dtype=torch.long, device=device), conf)
        prediction = torch.empty(n, dtype=torch.long, device=device)
        layer = torch.empty(n, dtype=torch.long, device=device)
        confidence = torch.empty(n, dtype=torch.float32, device=device)
        for idx, pred, conf, ell in parts:
            prediction[idx], confidence[idx], layer[idx] = pred, conf, ell
        return ExitResult(prediction, layer, confidence)

    def _reference(self, state, memory) -> ExitResult:
        """Without compaction: every sample runs every block up to max_layer (tests, comparisons)."""
        n = state.h.shape[0]
        prediction = torch.zeros(n, dtype=torch.long, device=state.h.device)
        layer, confidence = torch.zeros_like(prediction), torch.zeros(n, device=state.h.device)
        done = torch.zeros(n, dtype=torch.bool, device=state.h.device)
        for i in range(self.hi):
            state = self.stack.block(i, state)
            if i + 1 < self.lo:
                continue
            d = self.policy.decide(self.heads[i](state.h, state.mask), memory)
            first = (d.exit | (i + 1 == self.hi)) & ~done
            prediction = torch.where(first, d.prediction, prediction)
            confidence = torch.where(first, d.confidence, confidence)
            layer = torch.where(first, i + 1, layer)
            done |= first
        return ExitResult(prediction, layer, confidence)

    def run(self, batches: Iterable[Batch]) -> ExitResult:
        """All batches, concatenated in order (labels ignored)."""
        return ExitResult.cat([self(b) for b in batches])


# ---------------------------------------------------------------- whole-data helpers


def materialize(loader: Iterable[Batch], device: torch.device | str) -> list[Batch]:
    """Batches on the device up front, so timings exclude data loading."""
    batches = [to_device(b, device) for b in loader]
    if not batches:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    return batches


def model_inputs(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.inference_mode()
def layer_logits(stack: LayerStack, batches: Iterable[Batch], exit_heads: nn.ModuleList | None = None) -> Tensor:
    """(L, N, C) logits of the readout serving each layer 1..L, in one forward per batch (on the CPU)."""
    heads = exit_heads_of(stack, exit_heads)
    per_batch = []
    for batch in batches:
        states = list(stack.states(model_inputs(batch)))[1:]
        per_batch.append(torch.stack([heads[i](s.h, s.mask).float().cpu() for i, s in enumerate(states)]))
    if not per_batch:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    return torch.cat(per_batch, dim=1)


def simulate(policy: ExitPolicy, logits: Tensor, lo: int = 1, hi: int | None = None) -> ExitResult:
    """What the runner decides, from precomputed (L, N, C) layer logits (exact; no compaction needed)."""
    hi = hi or logits.shape[0]
    n = logits.shape[1]
    memory = policy.start(n, logits.device)
    done = torch.zeros(n, dtype=torch.bool)
    pred, layer, conf = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.zeros(n)
    for ell in range(lo, hi + 1):
        d = policy.decide(logits[ell - 1], memory)
        first = (d.exit | (ell == hi)) & ~done
        pred, conf = torch.where(first, d.prediction, pred), torch.where(first, d.confidence, conf)
        layer = torch.where(first, ell, layer)
        done |= first
    return ExitResult(pred, layer, conf)


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_forward(model: nn.Module, batches: Sequence[Batch]) -> Callable[[], None]:
    """The baseline: the wrapped model's own forward over all batches."""

    @torch.inference_mode()
    def run() -> None:
        for b in batches:
            model(**model_inputs(b))

    return run


# ---------------------------------------------------------------- the `layerwise exit` report


def _accuracy(prediction: Tensor, labels: Tensor) -> float:
    return float((prediction.cpu() == labels.cpu()).double().mean())


def _clean(x: Any) -> Any:
    """JSON without NaN/inf (→ null)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def calibrate(policy: ExitPolicy, logits: Tensor, labels: Tensor, eps: float, lo: int, hi: int) -> dict[str, Any]:
    """The threshold with the largest layer-count speedup whose accuracy on (validation) logits stays within ε
    of the full model's (layer L); ties go to the safer threshold. Candidates: the observed scores."""
    full = _accuracy(logits[-1].argmax(-1), labels)
    best: dict[str, Any] | None = None
    for tau in calibration_grid(policy, logits):
        r = simulate(policy.with_threshold(tau), logits, lo, hi)
        acc, s = _accuracy(r.prediction, labels), layer_speedup(r.histogram(logits.shape[0]))
        if full - acc <= eps + 1e-12 and (best is None or s > best["layer_speedup"] + 1e-12):
            best = {"threshold": tau, "val_accuracy": acc, "val_full_accuracy": full, "layer_speedup": s}
    return best  # the safest threshold (never early) always qualifies, so best is set


def calibration_grid(policy: ExitPolicy, logits: Tensor, points: int = 201) -> list[float]:
    """Safest first: distinct quantiles of the per-layer scores (so the grid adapts to how confident the model
    is) plus the never-early end (τ = 1 / entropy 0 / k = L)."""
    if policy.name == "patience":
        return [float(k) for k in range(logits.shape[0], 0, -1)]
    probs = logits.float().softmax(-1)
    if policy.name == "confidence":
        scores = probs.max(-1).values.flatten()
    else:
        scores = -(probs * probs.clamp_min(1e-30).log()).sum(-1).flatten()
    q = torch.quantile(scores.double(), torch.linspace(0, 1, points, dtype=torch.double)).tolist()
    if policy.name == "confidence":
        return sorted({1.0, *[v for v in q if 0.0 < v <= 1.0]}, reverse=True)
    return sorted({0.0, *[max(v, 0.0) for v in q]})


def _split_val(ds, val_split: str | None, split: str, data: str, limit: int | None, seed: int, data_dir):
    """(validation, test) data sets: a held-out fraction of the evaluation data, or another split by name."""
    from layerwise.data import LayerwiseDataset, load_dataset

    if val_split is None:
        return None, ds
    try:
        frac = float(val_split)
    except ValueError:
        return load_dataset(data, val_split, limit=limit, seed=seed, data_dir=data_dir), ds
    if not 0.0 < frac < 1.0:
        raise LayerwiseError(f"--val-split {val_split}: pass a fraction in (0, 1) or a split name")
    n_val = int(round(frac * len(ds)))
    if n_val == 0 or n_val == len(ds):
        raise LayerwiseError(f"--val-split {val_split} of {len(ds)} samples leaves an empty part: use more data")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 1))

    def part(index: Tensor) -> LayerwiseDataset:
        return LayerwiseDataset(ds.name, ds.kind, images=None if ds.images is None else ds.images[index],
                                texts=None if ds.texts is None else [ds.texts[i] for i in index.tolist()],
                                labels=ds.labels[index], class_names=ds.class_names)

    return part(order[:n_val]), part(order[n_val:])


def evaluate_model(bundle, policy: ExitPolicy, test: list[Batch], val: list[Batch] | None, *, eps: float,
                   delta: float, thresholds: Sequence[float] | None, repeats: int = 1) -> dict[str, Any]:
    """Everything ``layerwise exit`` reports for one model on pre-materialised batches."""
    from layerwise.truncate import minimal_depth

    stack, heads = bundle.stack, bundle.exit_heads
    runner = EarlyExitRunner(stack, policy, heads)
    L = stack.num_layers
    labels = torch.cat([b["labels"].cpu() for b in test])
    logits = layer_logits(stack, test, heads)
    per_layer = [_accuracy(x.argmax(-1), labels) for x in logits]
    t_full = timed(plain_forward(bundle.model, test), repeats)

    def point(p: ExitPolicy) -> dict[str, Any]:
        r = EarlyExitRunner(stack, p, heads)
        times = []
        for _ in range(repeats):  # the plain-forward timing above warmed everything up
            _sync()
            t0 = time.perf_counter()
            result = r.run(test)
            _sync()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        hist = result.histogram(L)
        return {"threshold": p.threshold, "accuracy": _accuracy(result.prediction, labels), "histogram": hist,
                "layer_speedup": layer_speedup(hist), "wall_speedup": t_full / t, "seconds": t}

    main = point(policy)
    # Default sweep: deciles of the observed scores (fits weak and strong models alike), safest last.
    grid = thresholds or [round(t, 4) for t in calibration_grid(policy, logits, 11)][::-1]
    sweep = [point(policy.with_threshold(t)) for t in grid]
    report: dict[str, Any] = {
        "name": bundle.name, "num_layers": L, "samples": len(labels), "policy": policy.name,
        "exit_heads": heads is not None, "full_accuracy": per_layer[-1], "full_seconds": t_full,
        **{k: main[k] for k in ("threshold", "accuracy", "layer_speedup", "wall_speedup", "seconds")},
        "accuracy_drop": per_layer[-1] - main["accuracy"], "exit_histogram": main["histogram"],
        "per_layer_accuracy": per_layer, "minimal_depth": {"delta": delta, "k": minimal_depth(per_layer, delta)},
        "sweep": sweep,
    }
    if val is not None:
        val_labels = torch.cat([b["labels"].cpu() for b in val])
        cal = calibrate(policy, layer_logits(stack, val, heads), val_labels, eps, runner.lo, runner.hi)
        at = point(policy.with_threshold(cal["threshold"]))
        report["calibration"] = {"eps": eps, **cal, "test_accuracy": at["accuracy"],
                                 "test_accuracy_drop": per_layer[-1] - at["accuracy"],
                                 "test_layer_speedup": at["layer_speedup"], "test_wall_speedup": at["wall_speedup"],
                                 "test_histogram": at["histogram"]}
    return report


def evaluate_exit(models: Sequence[str], data: str, out: str | Path, *, policy: str = "confidence",
                  threshold: float = 0.9, split: str = "test", limit: int | None = None, batch_size: int = 64,
                  calibrate_eps: float = 0.01, val_split: str | None = "0.5", delta: float = 0.01,
                  min_layer: int = 1, max_layer: int | None = None, thresholds: Sequence[float] | None = None,
                  device: str = "auto", seed: int = 0, data_dir: str | Path | None = None, repeats: int = 1,
                  shift_data: str | None = None) -> dict[str, Any]:
    """``layerwise exit``: write ``out/results.json``, ``exit_histogram.png`` and ``sweep.png``."""
    from layerwise.data import load_dataset, make_loader
    from layerwise.zoo import BUILTIN, atomic_save_json, load_model

    if not models:
        raise LayerwiseError("no model given: pass --model at least once")
    if batch_size < 1 or repeats < 1:
        raise LayerwiseError(f"--batch-size {batch_size} / --repeats {repeats}: pass positive integers")
    if not 0.0 <= calibrate_eps < 1.0 or not 0.0 <= delta < 1.0:
        raise LayerwiseError("--calibrate-eps and --delta are accuracy differences: pass values in [0, 1)")
    dev = pick_device(device)
    pol = make_policy(policy, threshold, min_layer, max_layer)  # validates the threshold before any work
    ds = load_dataset(data, split, limit=limit, seed=seed, data_dir=data_dir)
    if ds.kind == "corpus" or ds.labels is None:
        raise LayerwiseError(f"{data} has no class labels: early exit needs a labelled classification data set")
    val_ds, test_ds = _split_val(ds, val_split, split, data, limit, seed, data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for spec in models:
        bundle = load_model(spec, num_classes=ds.num_classes if spec in BUILTIN else None)
        bundle.model.to(dev).eval()
        if bundle.exit_heads is not None:
            bundle.exit_heads.to(dev).eval()
        pol.check(bundle.stack)  # fail fast (before any data passes) on a model the policy cannot use
        if ds.num_classes and bundle.stack.num_classes and ds.num_classes > bundle.stack.num_classes:
            raise LayerwiseError(f"{spec} predicts {bundle.stack.num_classes} classes but {data} has "
                                 f"{ds.num_classes}: pick a model trained on it")
        test = materialize(make_loader(test_ds, bundle.inputs, batch_size), dev)
        val = None if val_ds is None else materialize(make_loader(val_ds, bundle.inputs, batch_size), dev)
        report = evaluate_model(bundle, pol, test, val, eps=calibrate_eps, delta=delta, thresholds=thresholds,
                                repeats=repeats)
        report["model"] = spec
        if shift_data is not None:
            from layerwise.transfer import layerwise_accuracy

            report["shift"] = {"data": shift_data, "per_layer_accuracy": layerwise_accuracy(
                bundle, shift_data, split=split, limit=limit, batch_size=batch_size, data_dir=data_dir, seed=seed)}
        reports.append(report)
    results = {"data": data, "split": split, "val_split": val_split, "batch_size": batch_size,
               "device": str(dev), "policy": policy, "threshold": threshold, "models": reports}
    atomic_save_json(_clean(results), out / "results.json")
    plot_histograms(reports, out / "exit_histogram.png")
    plot_sweep(reports, out / "sweep.png")
    return results


def plot_histograms(reports: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4 * len(reports), 3.2), squeeze=False)
    for ax, r in zip(axes[0], reports):
        hist = r["exit_histogram"]
        ax.bar(range(1, len(hist) + 1), hist, color="tab:blue")
        ax.set(title=f"{Path(r['name']).name}: {r['policy']} τ={r['threshold']:g}", xlabel="exit layer",
               ylabel="samples", xticks=range(1, len(hist) + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(reports: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in zip(("layer_speedup", "wall_speedup"), axes):
        for r in reports:
            xs = [p[key] for p in r["sweep"]]
            ax.plot(xs, [p["accuracy"] for p in r["sweep"]], "o-", label=Path(r["name"]).name)
        ax.set(xlabel=f"{key.replace('_', ' ')} (×)", ylabel="accuracy", title=key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["ExitResult", "EarlyExitRunner", "layer_speedup", "layer_logits", "simulate", "calibrate", "timed",
           "plain_forward", "materialize", "evaluate_model", "evaluate_exit"]
