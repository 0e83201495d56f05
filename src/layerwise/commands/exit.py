"""``exit``: early-exit evaluation of one or more models on the same data (results.json, exit_histogram.png,
sweep.png, per_layer_accuracy.png): per-layer accuracy, the exit histogram at τ, both speedups, a threshold
sweep, the ε-calibrated threshold and what it gives on the test split, the minimal depth, and the shift and
transfer task of paper Fig. 6 when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Sequence

from pydantic import Field, PositiveInt

from layerwise.commands.common import CommandOptions, Folder, LogWith, only_with
from layerwise.parallel import open_folder, rank0
from layerwise.errors import LayerwiseError

OUTPUTS = ("results.json", "exit_histogram.png", "sweep.png", "per_layer_accuracy.png", "trackers")
AccuracyDifference = Annotated[float, Field(ge=0.0, lt=1.0)]  # also rejects NaN


class ExitOptions(CommandOptions):
    """The options of ``exit`` (the policy checks its own threshold and layers)."""

    model: Annotated[list[str], Field(min_length=1)]  # one or more models, compared on the same data
    data: str
    policy: str = "confidence"  # confidence | entropy | patience
    threshold: float = 0.9  # τ: max softmax ≥ τ, entropy ≤ τ, or patience k
    check_every: PositiveInt = 1  # evaluate the exit signal only every k-th layer
    out: Folder = Path("runs/exit")
    split: str = "test"
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64
    min_layer: int = 1
    max_layer: int | None = None
    calibrate_eps: AccuracyDifference = 0.01  # allowed accuracy drop on the validation split
    val_split: str | None = "0.5"  # fraction held out for calibration, a split name, or None (no calibration)
    delta: AccuracyDifference = 0.01  # minimal depth: smallest k within δ of the best layer
    thresholds: list[float] | None = None  # the sweep's thresholds [deciles of the observed scores]
    shift_data: str | None = None
    shift_augment: bool = False
    transfer_data: str | None = None
    transfer_splits: str = "train,test"  # fit split,test split
    transfer_limit: PositiveInt | None = 2000
    repeats: PositiveInt = 1  # timing repeats (median)
    lens: list[str] = ["logit"]  # how each layer is read: logit | tuned:DIR, one for every model or one per model
    data_dir: Folder | None = None
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    log_with: LogWith = None  # experiment trackers: per-layer results and the figures (docs/scaling.md)


def two_splits(text: str) -> tuple[str, str]:
    """``train,dev`` → ("train", "dev"): the transfer task's fit and test splits."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise LayerwiseError(f"`transfer_splits` {text!r}: pass two split names, fit then test, e.g. train,dev")
    return parts[0], parts[1]


def validation_split(ds, o: ExitOptions):
    """(validation, test): a held-out fraction of the evaluation data, or another split by name."""
    from layerwise.data import load_dataset
    from layerwise.data.load import holdout

    if o.val_split is None:
        return None, ds
    try:
        fraction = float(o.val_split)
    except ValueError:
        return load_dataset(o.data, o.val_split, limit=o.limit, seed=o.seed, data_dir=o.data_dir), ds
    if not 0.0 < fraction < 1.0:
        raise LayerwiseError(f"`val_split` {o.val_split}: pass a fraction in (0, 1) or a split name")
    return holdout(ds, fraction, o.seed)


def run(options: ExitOptions) -> dict[str, Any]:
    """Evaluate early exit for every model of ``options.model``; write and return the results."""
    o = options
    splits = two_splits(o.transfer_splits)
    only_with(o, o.transfer_data is not None, "`transfer_data`", "transfer_splits", "transfer_limit")
    if o.log_with:
        from layerwise.training.log import tracker_names

        tracker_names(o.log_with)  # a missing tracker package is refused before any work
    from layerwise.commands.lens import check_lenses

    lens_specs = check_lenses(o.lens, o.model)
    if (o.shift_data is not None or o.shift_augment or o.transfer_data is not None) and set(lens_specs) != {"logit"}:
        raise LayerwiseError("`lens` reads the early-exit layers; the shift and transfer tasks use the logit lens: "
                             "run them without `lens`", option="lens")
    folder = open_folder(Path(o.out), "exit", overwrite=o.overwrite, outputs=OUTPUTS)
    out = folder.path
    from layerwise.checkpoints import BUILTIN, load_model  # after the checks: a bad option is answered without torch
    from layerwise.data import load_dataset, make_loader, materialize
    from layerwise.device import pick_device
    from layerwise.evaluation import layerwise_accuracy, transfer_accuracy
    from layerwise.inference import make_policy
    from layerwise.report.writers import write_exit

    from layerwise.parallel import local_device

    dev = local_device(pick_device(o.device))
    pol = make_policy(o.policy, o.threshold, o.min_layer, o.max_layer, check_every=o.check_every)  # validates the threshold before any work
    ds = load_dataset(o.data, o.split, limit=o.limit, seed=o.seed, data_dir=o.data_dir)
    if ds.kind == "corpus" or ds.labels is None:
        raise LayerwiseError(f"{o.data} has no class labels: early exit needs a labelled classification data set")
    if o.shift_augment and ds.kind != "image":
        raise LayerwiseError(f"`shift_augment` applies the image augmentations, and {o.data} is {ds.kind} data: "
                             "pass `shift_data` with another data set instead")
    val_ds, test_ds = validation_split(ds, o)
    reports = []
    from layerwise.stack import make_lens

    for spec, lens_spec in zip(o.model, lens_specs):
        bundle = load_model(spec, num_classes=ds.num_classes if spec in BUILTIN else None)
        bundle.model.to(dev).eval()
        if bundle.exit_heads is not None:
            bundle.exit_heads.to(dev).eval()
        lens = make_lens(lens_spec, bundle.stack)
        pol.check(bundle.stack)  # fail fast (before any data passes) on a model the policy cannot use
        if ds.num_classes and bundle.stack.num_classes and ds.num_classes > bundle.stack.num_classes:
            raise LayerwiseError(f"{spec} predicts {bundle.stack.num_classes} classes but {o.data} has "
                                 f"{ds.num_classes}: pick a model trained on it")
        for part in (ds, val_ds):  # a validation split given by name is other data
            if part is not None:
                part.check_labels(bundle.stack.num_classes, spec)
        test = materialize(make_loader(test_ds, bundle.inputs, o.batch_size), dev)
        val = None if val_ds is None else materialize(make_loader(val_ds, bundle.inputs, o.batch_size), dev)
        report = exit_report(bundle, pol, test, val, eps=o.calibrate_eps, delta=o.delta, thresholds=o.thresholds,
                             repeats=o.repeats, metrics=ds.metrics, lens=lens)
        report["model"], report["lens"] = spec, lens_spec
        common = dict(limit=o.limit, batch_size=o.batch_size, data_dir=o.data_dir, seed=o.seed)
        if o.shift_data is not None or o.shift_augment:
            shifted = test_ds if o.shift_data is None else o.shift_data  # augmentation: the very samples scored
            report["shift"] = {"data": o.shift_data or o.data, "augment": o.shift_augment,
                               "per_layer_accuracy": layerwise_accuracy(
                                   bundle, shifted, split=o.split, augment=o.shift_augment, **common)}
        if o.transfer_data is not None:
            report["transfer"] = {"data": o.transfer_data, "splits": list(splits), **transfer_accuracy(
                bundle, o.transfer_data, o.transfer_data, train_split=splits[0], test_split=splits[1],
                **{**common, "limit": o.transfer_limit})}
        reports.append(report)
    results = {"data": o.data, "split": o.split, "val_split": o.val_split, "batch_size": o.batch_size,
               "device": str(dev), "policy": o.policy, "threshold": o.threshold, "check_every": o.check_every,
               "models": reports, "world_size": reports[0]["world_size"], "rank_samples": reports[0]["rank_samples"]}
    rank0(write_exit, results, out)  # rank 0 alone writes; every process holds the same results
    if o.log_with:
        rank0(log_exit, o, results, out)
    rank0(folder.record)
    return results


def log_exit(o: ExitOptions, results: dict, out: Path) -> None:
    """``log_with``: each model's per-layer accuracy, exit histogram and metrics as scalars named by layer
    (``exit/model_<i>/<key>/layer_LL``), the configuration as hyperparameters, and the figures."""
    from layerwise.training.log import layer_scalars, log_run

    scalars = {k: v for i, r in enumerate(results["models"]) for k, v in layer_scalars(
        {k: v for k, v in r.items() if k != "sweep"}, r["num_layers"], f"exit/model_{i}").items()}
    config = {**{k: v for k, v in results.items() if k != "models"}, "models": ", ".join(o.model)}
    log_run(o.log_with, "exit", out, config, scalars, [out / p for p in OUTPUTS if p.endswith(".png")])


def exit_report(bundle, policy, test: list, val: list | None, *,
                   eps: float, delta: float, thresholds: Sequence[float] | None, repeats: int = 1,
                   metrics: Sequence[str] | None = None, lens=None) -> dict[str, Any]:
    """Everything ``layerwise exit`` reports for one model on pre-materialised batches; ``metrics`` (the task's,
    its own first: F1, Matthews correlation, …) are reported per layer beside the accuracy. Every layer is read
    through ``lens`` (a ``stack.Lens``; None: the logit lens).

    Wall-clock speedup = t(the model's own forward) / t(runner), same batches and device, median of
    ``repeats``; layer-count speedup = Σ L·mᵢ / Σ i·mᵢ.

    Data-parallel under a launcher (``layerwise.parallel``): each process runs its contiguous shard of ``test``
    and ``val``; logits and each sample's exit (prediction, layer, confidence) are gathered in data-set order
    before anything is counted or calibrated, and a time is the slowest process's.
    """
    import torch

    from layerwise.parallel import gather_rows, reduce_max, rows, shard_list, split_record

    from layerwise.data.batches import labels_of
    from layerwise.data.metrics import layer_task_metrics
    from layerwise.evaluation.depth import minimal_depth
    from layerwise.evaluation.per_layer import gathered_layer_logits
    from layerwise.inference import (EarlyExitRunner, accuracy, calibrate, calibration_grid, layer_speedup,
                                     median_seconds, plain_forward, timed)
    from layerwise.inference.runner import ExitResult

    stack, heads = bundle.stack, bundle.exit_heads
    runner = EarlyExitRunner(stack, policy, heads, lens=lens)
    L = stack.num_layers
    labels, local = labels_of(test), shard_list(test)
    logits = gathered_layer_logits(stack, test, heads, lens)
    per_layer = [accuracy(x.argmax(-1), labels) for x in logits]
    t_full = reduce_max(timed(plain_forward(bundle.model, local), repeats))

    def point(p) -> dict[str, Any]:
        r = EarlyExitRunner(stack, p, heads, lens=lens)
        t, mine = median_seconds(lambda: r.run(local) if local else None, repeats)  # plain forward warmed up
        t, result = reduce_max(t), ExitResult(*(gather_rows(None if mine is None else getattr(mine, f).cpu())
                                                for f in ("prediction", "layer", "confidence")))
        hist = result.histogram(L)
        return {"threshold": p.threshold, "accuracy": accuracy(result.prediction, labels), "histogram": hist,
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
        "metric": (metrics or ("accuracy",))[0],
        "per_layer_metrics": layer_task_metrics(torch.stack([x.argmax(-1) for x in logits]).numpy(), labels.numpy(),
                                                metrics or ("accuracy",)),
        **split_record(rows(local)),
    }
    if val is not None:
        cal = calibrate(policy, gathered_layer_logits(stack, val, heads, lens), labels_of(val), eps,
                        runner.lo, runner.hi)
        at = point(policy.with_threshold(cal["threshold"]))
        report["calibration"] = {"eps": eps, **cal, "test_accuracy": at["accuracy"],
                                 "test_accuracy_drop": per_layer[-1] - at["accuracy"],
                                 "test_layer_speedup": at["layer_speedup"], "test_wall_speedup": at["wall_speedup"],
                                 "test_histogram": at["histogram"]}
    return report
