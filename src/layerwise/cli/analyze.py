"""``layerwise analyze`` and ``layerwise compare``: check, load, measure, write."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Optional

import typer
from pydantic import PositiveInt

from layerwise.cli.app import Flags, app, check_flags, check_out_dir, report_warnings

DEFAULT_MEASURES = "cos,cka_linear,cka_linear_debiased"
DTYPES = ("float32", "float64", "bfloat16", "float16")
DTYPE_HELP = "precision the model runs in, whatever it was saved in: " + " | ".join(DTYPES)


class AnalysisFlags(Flags):
    """The flags of ``analyze`` and ``compare`` that are checked before anything loads."""

    batch_size: PositiveInt
    sample_cap: PositiveInt
    probe_limit: PositiveInt | None = None
    limit: PositiveInt | None
    dtype: Literal[DTYPES]  # type: ignore[valid-type]


def _prepare(measures: str, out: Path, device: str, **flags):
    """Everything checkable before loading: the flags and ``--out`` (answered before torch is even imported),
    then the measure names and the device."""
    check_flags(AnalysisFlags, **flags)
    check_out_dir(Path(out))
    from layerwise.device import pick_device
    from layerwise.measures import parse_measures

    return parse_measures(measures), pick_device(device)


def _load(model: str, device, dtype: str):
    """The model on ``device``, cast to ``dtype``: a checkpoint saved in half precision is analysed in float32
    unless asked otherwise, since bf16 features shift the similarities (CKA(1, L) 0.65 against 0.96)."""
    import torch

    from layerwise.checkpoints import load_model

    bundle = load_model(model)
    bundle.model.to(device=device, dtype=getattr(torch, dtype)).eval()
    return bundle


def _check_labels(ds, bundle, model: str) -> None:
    """A classifier's labels must index its classes and a regression head needs real-valued targets, checked
    before any forward pass (encoders take any label)."""
    stack = bundle.stack
    if stack.task in ("classification", "regression") and stack.num_classes:
        ds.check_labels(stack.num_classes, model)


def _probe_data(data: str, split: str, probe: bool, ds, limit: int | None, seed: int, data_dir, columns):
    """The training part the probe is fitted on (``limit`` seeded examples of split train), or None: no probe
    asked, unlabelled or regression data, or no training split (then with a warning)."""
    from layerwise.data import load_dataset
    from layerwise.errors import LayerwiseError

    if not probe or ds.kind == "corpus" or ds.labels is None or ds.regression:
        if probe and ds.regression:
            warnings.warn(f"probe and NC1 skipped: {data} is a regression task (they need classes)", stacklevel=2)
        return None
    if split == "train":
        warnings.warn("the probe is fitted on split train and scored on the analysed split, the same data here: "
                      "analyze another split for a held-out probe accuracy", stacklevel=2)
    try:
        return load_dataset(data, "train", limit=limit, seed=seed, data_dir=data_dir, columns=columns)
    except LayerwiseError as e:
        warnings.warn(f"probe and NC1 skipped: no training split ({e})", stacklevel=2)
        return None


def _with_warnings(run, *args, **kwargs) -> dict:
    """``run(*args, **kwargs)``, its own warnings (undefined layers, subsampling) in ``results["warnings"]``."""
    from layerwise.report import warning_messages

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run(*args, **kwargs)
    results["warnings"] = warning_messages(caught)
    return results


def run_analysis(*, model: str, data: str, out: Path, split: str = "test", limit: int | None = None,
                 batch_size: int = 64, pooling: str | None = None, measures: str = DEFAULT_MEASURES,
                 sample_cap: int = 2000, data_dir=None, device: str = "auto", seed: int = 0,
                 dtype: str = "float32", probe: bool = True, probe_limit: int | None = 1000,
                 text_column: str | None = None, text_pair_column: str | None = None,
                 label_column: str | None = None) -> dict:
    """``layerwise analyze``: similarity matrices, per-layer readout metrics, probe accuracy and NC1, and
    residual statistics of one model, written to ``out`` (results.json, layers.csv, figures)."""
    names, dev = _prepare(measures, out, device, batch_size=batch_size, sample_cap=sample_cap, limit=limit,
                          dtype=dtype, probe_limit=probe_limit)
    from layerwise.data import Columns, load_dataset  # after the checks: a bad flag is answered without torch
    from layerwise.evaluation import analyze
    from layerwise.report.writers import write_analysis

    columns = Columns(text_column, text_pair_column, label_column)
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir, columns=columns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = _probe_data(data, split, probe, ds, probe_limit, seed, data_dir, columns)
    bundle = _load(model, dev, dtype)
    _check_labels(ds, bundle, model)
    if train is not None:
        _check_labels(train, bundle, model)
    results = _with_warnings(analyze, bundle, ds, names, batch_size=batch_size, pooling=pooling,
                             sample_cap=sample_cap, seed=seed, device=dev, skip_inapplicable=measures.strip() == "all",
                             probe_train=train)
    from layerwise.report import warning_messages

    results["warnings"] = warning_messages(caught) + results["warnings"]
    results["config"] = dict(model=model, data=data, split=split, limit=limit, batch_size=batch_size,
                             pooling=pooling or bundle.stack.feature_pooling, measures=names, sample_cap=sample_cap,
                             device=str(dev), seed=seed, task=bundle.stack.task, dtype=dtype,
                             probe=train is not None, probe_limit=probe_limit if train is not None else None)
    write_analysis(results, Path(out))
    return results


def run_compare(*, model_a: str, model_b: str, data: str, out: Path, split: str = "test",
                limit: int | None = None, batch_size: int = 64, pooling: str | None = None,
                measures: str = DEFAULT_MEASURES, sample_cap: int = 2000, data_dir=None, device: str = "auto",
                seed: int = 0, dtype: str = "float32") -> dict:
    """``layerwise compare``: L_a × L_b matrices between two models' layers on the same inputs."""
    names, dev = _prepare(measures, out, device, batch_size=batch_size, sample_cap=sample_cap, limit=limit,
                          dtype=dtype)
    from layerwise.data import load_dataset  # after the checks: a bad flag is answered without loading torch
    from layerwise.evaluation import compare
    from layerwise.report.writers import write_compare

    a = _load(model_a, dev, dtype)
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir)
    b = _load(model_b, dev, dtype)
    for bundle, name in ((a, model_a), (b, model_b)):
        _check_labels(ds, bundle, name)
    results = _with_warnings(compare, a, b, ds, names, batch_size=batch_size, pooling=pooling,
                             sample_cap=sample_cap, seed=seed, device=dev, skip_inapplicable=measures.strip() == "all")
    results["config"] = dict(model_a=model_a, model_b=model_b, data=data, split=split, limit=limit,
                             batch_size=batch_size, pooling=pooling, measures=names, sample_cap=sample_cap,
                             device=str(dev), seed=seed, dtype=dtype)
    write_compare(results, Path(out))
    return results


@app.command("analyze")
def analyze_command(
    model: str = typer.Option("minilm", help="built-in name, model directory, or hub name"),
    data: str = typer.Option("sentences", help="data set name or path (see README)"),
    out: Path = typer.Option(Path("runs/analyze"), help="output directory"),
    split: str = typer.Option("test", help="data split"),
    limit: Optional[int] = typer.Option(None, help="use at most this many samples"),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None, help="cls | last | mean (default: the model's own)"),
    measures: str = typer.Option(DEFAULT_MEASURES, help="comma list (see README), or 'all'"),
    sample_cap: int = typer.Option(2000, help="max samples for measures that need N×N structure"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    probe: bool = typer.Option(True, "--probe/--no-probe",
                               help="per-layer linear probe and NC1 (needs labels and a training split)"),
    probe_limit: Optional[int] = typer.Option(1000, help="training examples the probe is fitted on (seeded)"),
    text_column: Optional[str] = typer.Option(None, help="table files: text column [sentence, text, sentence1, …]"),
    text_pair_column: Optional[str] = typer.Option(None, help="table files: second text of a pair [sentence2, …]"),
    label_column: Optional[str] = typer.Option(None, help="table files: label column [label; score = regression]"),
) -> None:
    """Per-layer similarity, readout metrics, probe accuracy, NC1 and residual analysis; writes results.json,
    CSV and figures."""
    results = run_analysis(model=model, data=data, out=out, split=split, limit=limit, batch_size=batch_size,
                           pooling=pooling, measures=measures, sample_cap=sample_cap, data_dir=data_dir,
                           device=device, seed=seed, dtype=dtype, probe=probe, probe_limit=probe_limit,
                           text_column=text_column, text_pair_column=text_pair_column, label_column=label_column)
    report_warnings(results)
    typer.echo(f"wrote {out}/results.json")


@app.command("compare")
def compare_command(
    model_a: str = typer.Option(..., "--model-a"),
    model_b: str = typer.Option(..., "--model-b"),
    data: str = typer.Option("sentences"),
    out: Path = typer.Option(Path("runs/compare")),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None),
    measures: str = typer.Option(DEFAULT_MEASURES, help="comma list (see README), or 'all'"),
    sample_cap: int = typer.Option(2000),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
) -> None:
    """Cross-model L_a×L_b similarity matrices on the same inputs."""
    results = run_compare(model_a=model_a, model_b=model_b, data=data, out=out, split=split, limit=limit,
                          batch_size=batch_size, pooling=pooling, measures=measures, sample_cap=sample_cap,
                          data_dir=data_dir, device=device, seed=seed, dtype=dtype)
    report_warnings(results)
    typer.echo(f"wrote {out}/results.json")
