"""``layerwise analyze`` and ``layerwise compare``: load, measure, write."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, check_out_dir, report_warnings

DEFAULT_MEASURES = "cos,cka_linear,cka_linear_debiased"


def _load(model: str, device):
    from layerwise.checkpoints import load_model

    bundle = load_model(model)
    bundle.model.to(device).eval()
    return bundle


def run_analysis(*, model: str, data: str, out: Path, split: str = "test", limit: int | None = None,
                 batch_size: int = 64, pooling: str | None = None, measures: str = DEFAULT_MEASURES,
                 sample_cap: int = 2000, data_dir=None, device: str = "auto", seed: int = 0) -> dict:
    """``layerwise analyze``: similarity matrices, per-layer readout accuracy/loss and residual statistics of
    one model, written to ``out`` (results.json, layers.csv, figures)."""
    from layerwise.data import load_dataset
    from layerwise.device import pick_device
    from layerwise.evaluation import analyze
    from layerwise.measures import parse_measures
    from layerwise.report import warning_messages
    from layerwise.report.writers import write_analysis

    names = parse_measures(measures)
    check_out_dir(Path(out))
    dev = pick_device(device)
    bundle = _load(model, dev)
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = analyze(bundle, ds, names, batch_size=batch_size, pooling=pooling, sample_cap=sample_cap,
                          seed=seed, device=dev, skip_inapplicable=measures.strip() == "all")
    results["warnings"] = warning_messages(caught)
    results["config"] = dict(model=model, data=data, split=split, limit=limit, batch_size=batch_size,
                             pooling=pooling or bundle.stack.feature_pooling, measures=names, sample_cap=sample_cap,
                             device=str(dev), seed=seed, task=bundle.stack.task)
    write_analysis(results, Path(out))
    return results


def run_compare(*, model_a: str, model_b: str, data: str, out: Path, split: str = "test",
                limit: int | None = None, batch_size: int = 64, pooling: str | None = None,
                measures: str = DEFAULT_MEASURES, sample_cap: int = 2000, data_dir=None, device: str = "auto",
                seed: int = 0) -> dict:
    """``layerwise compare``: L_a × L_b matrices between two models' layers on the same inputs."""
    from layerwise.data import load_dataset
    from layerwise.device import pick_device
    from layerwise.evaluation import compare
    from layerwise.measures import parse_measures
    from layerwise.report import warning_messages
    from layerwise.report.writers import write_compare

    names = parse_measures(measures)
    check_out_dir(Path(out))
    dev = pick_device(device)
    a = _load(model_a, dev)
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir)
    b = _load(model_b, dev)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = compare(a, b, ds, names, batch_size=batch_size, pooling=pooling, sample_cap=sample_cap, seed=seed,
                          device=dev, skip_inapplicable=measures.strip() == "all")
    results["warnings"] = warning_messages(caught)
    results["config"] = dict(model_a=model_a, model_b=model_b, data=data, split=split, limit=limit,
                             batch_size=batch_size, pooling=pooling, measures=names, sample_cap=sample_cap,
                             device=str(dev), seed=seed)
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
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0),
) -> None:
    """Per-layer similarity, readout accuracy and residual analysis; writes results.json, CSV and figures."""
    results = run_analysis(model=model, data=data, out=out, split=split, limit=limit, batch_size=batch_size,
                           pooling=pooling, measures=measures, sample_cap=sample_cap, data_dir=data_dir,
                           device=device, seed=seed)
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
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Cross-model L_a×L_b similarity matrices on the same inputs."""
    results = run_compare(model_a=model_a, model_b=model_b, data=data, out=out, split=split, limit=limit,
                          batch_size=batch_size, pooling=pooling, measures=measures, sample_cap=sample_cap,
                          data_dir=data_dir, device=device, seed=seed)
    report_warnings(results)
    typer.echo(f"wrote {out}/results.json")
