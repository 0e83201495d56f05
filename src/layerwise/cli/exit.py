"""``layerwise exit``: early-exit evaluation of one or more models on the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer
from pydantic import Field, PositiveInt

from layerwise.cli.app import Flags, app, check_flags, check_out_dir
from layerwise.errors import LayerwiseError

AccuracyDifference = Annotated[float, Field(ge=0.0, lt=1.0)]  # also rejects NaN


class ExitFlags(Flags):
    """The flags of ``exit`` checked before anything loads (the policy checks its own threshold and layers)."""

    batch_size: PositiveInt
    repeats: PositiveInt
    limit: PositiveInt | None
    calibrate_eps: AccuracyDifference
    delta: AccuracyDifference
    transfer_limit: PositiveInt | None


def _validation_split(ds, val_split: str | None, data: str, limit: int | None, seed: int, data_dir):
    """(validation, test): a held-out fraction of the evaluation data, or another split by name."""
    from layerwise.data import load_dataset
    from layerwise.data.load import holdout

    if val_split is None:
        return None, ds
    try:
        fraction = float(val_split)
    except ValueError:
        return load_dataset(data, val_split, limit=limit, seed=seed, data_dir=data_dir), ds
    if not 0.0 < fraction < 1.0:
        raise LayerwiseError(f"--val-split {val_split}: pass a fraction in (0, 1) or a split name")
    return holdout(ds, fraction, seed)


def evaluate_exit(models: Sequence[str], data: str, out: str | Path, *, policy: str = "confidence",
                  threshold: float = 0.9, split: str = "test", limit: int | None = None, batch_size: int = 64,
                  calibrate_eps: float = 0.01, val_split: str | None = "0.5", delta: float = 0.01,
                  min_layer: int = 1, max_layer: int | None = None, thresholds: Sequence[float] | None = None,
                  device: str = "auto", seed: int = 0, data_dir: str | Path | None = None, repeats: int = 1,
                  shift_data: str | None = None, shift_augment: bool = False, transfer_data: str | None = None,
                  transfer_splits: tuple[str, str] = ("train", "test"),
                  transfer_limit: int | None = 2000) -> dict[str, Any]:
    """``layerwise exit``: write ``out/results.json``, ``exit_histogram.png``, ``sweep.png`` and
    ``per_layer_accuracy.png`` (with the shift and the transfer task of paper Fig. 6 when asked)."""
    if not models:
        raise LayerwiseError("no model given: pass --model at least once")
    check_flags(ExitFlags, batch_size=batch_size, repeats=repeats, limit=limit, calibrate_eps=calibrate_eps,
                delta=delta, transfer_limit=transfer_limit)
    out = check_out_dir(Path(out))
    from layerwise.checkpoints import BUILTIN, load_model  # after the checks: a bad flag is answered without torch
    from layerwise.data import load_dataset, make_loader, materialize
    from layerwise.device import pick_device
    from layerwise.evaluation import evaluate_model, layerwise_accuracy, transfer_accuracy
    from layerwise.inference import make_policy
    from layerwise.report.writers import write_exit

    dev = pick_device(device)
    pol = make_policy(policy, threshold, min_layer, max_layer)  # validates the threshold before any work
    ds = load_dataset(data, split, limit=limit, seed=seed, data_dir=data_dir)
    if ds.kind == "corpus" or ds.labels is None:
        raise LayerwiseError(f"{data} has no class labels: early exit needs a labelled classification data set")
    if shift_augment and ds.kind != "image":
        raise LayerwiseError(f"--shift-augment applies the image augmentations, and {data} is {ds.kind} data: "
                             "pass --shift-data with another data set instead")
    val_ds, test_ds = _validation_split(ds, val_split, data, limit, seed, data_dir)
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
        for part in (ds, val_ds):  # a validation split given by name is other data
            if part is not None:
                part.check_labels(bundle.stack.num_classes, spec)
        test = materialize(make_loader(test_ds, bundle.inputs, batch_size), dev)
        val = None if val_ds is None else materialize(make_loader(val_ds, bundle.inputs, batch_size), dev)
        report = evaluate_model(bundle, pol, test, val, eps=calibrate_eps, delta=delta, thresholds=thresholds,
                                repeats=repeats, metrics=ds.metrics)
        report["model"] = spec
        common = dict(limit=limit, batch_size=batch_size, data_dir=data_dir, seed=seed)
        if shift_data is not None or shift_augment:
            shifted = test_ds if shift_data is None else shift_data  # augmentation: the very samples scored above
            report["shift"] = {"data": shift_data or data, "augment": shift_augment,
                               "per_layer_accuracy": layerwise_accuracy(
                                   bundle, shifted, split=split, augment=shift_augment, **common)}
        if transfer_data is not None:
            report["transfer"] = {"data": transfer_data, "splits": list(transfer_splits), **transfer_accuracy(
                bundle, transfer_data, transfer_data, train_split=transfer_splits[0], test_split=transfer_splits[1],
                **{**common, "limit": transfer_limit})}
        reports.append(report)
    results = {"data": data, "split": split, "val_split": val_split, "batch_size": batch_size,
               "device": str(dev), "policy": policy, "threshold": threshold, "models": reports}
    write_exit(results, out)
    return results


def _two_splits(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise LayerwiseError(f"--transfer-splits {text!r}: pass two split names, fit then test, e.g. train,dev")
    return parts[0], parts[1]


@app.command("exit")
def exit_command(
    model: list[str] = typer.Option(..., "--model", help="model (repeat --model to compare several)"),
    data: str = typer.Option(..., help="labelled classification data set"),
    policy: str = typer.Option("confidence", help="confidence | entropy | patience"),
    threshold: float = typer.Option(0.9, help="τ: max softmax ≥ τ, entropy ≤ τ, or patience k"),
    out: Path = typer.Option(Path("runs/exit"), help="output directory"),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    min_layer: int = typer.Option(1, help="first layer that may exit"),
    max_layer: Optional[int] = typer.Option(None, help="last layer (default L): everything left exits there"),
    calibrate_eps: float = typer.Option(0.01, help="allowed accuracy drop on the validation split"),
    val_split: str = typer.Option("0.5", help="fraction of the data held out for calibration, or a split name"),
    delta: float = typer.Option(0.01, help="minimal depth: smallest k within δ of the best layer"),
    shift_data: Optional[str] = typer.Option(None, help="also report per-layer accuracy on this data set"),
    shift_augment: bool = typer.Option(False, "--shift-augment",
                                       help="shift = the evaluation data under the training augmentations"),
    transfer_data: Optional[str] = typer.Option(
        None, help="transfer task: one linear head fitted on the frozen last layer, applied after every layer"),
    transfer_splits: str = typer.Option("train,test", help="transfer task: fit split,test split"),
    transfer_limit: Optional[int] = typer.Option(2000, help="transfer task: examples per split (seeded)"),
    repeats: int = typer.Option(1, help="timing repeats (median)"),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Early-exit evaluation: accuracy, exit histogram, speedups, threshold sweep, calibration, minimal depth."""
    evaluate_exit(model, data, out, policy=policy, threshold=threshold, split=split, limit=limit,
                  batch_size=batch_size, calibrate_eps=calibrate_eps, val_split=val_split, delta=delta,
                  min_layer=min_layer, max_layer=max_layer, device=device, seed=seed, data_dir=data_dir,
                  repeats=repeats, shift_data=shift_data, shift_augment=shift_augment, transfer_data=transfer_data,
                  transfer_splits=_two_splits(transfer_splits), transfer_limit=transfer_limit)
    typer.echo(f"wrote {out}/results.json")
