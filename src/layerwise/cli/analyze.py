"""``layerwise analyze`` and ``layerwise compare``: flags → ``commands.analyze`` and ``commands.compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options, report_warnings
from layerwise.cli.scale import device_map_option, log_with_option, offload_option
from layerwise.commands import analyze, compare
from layerwise.commands.analyze import DEFAULT_MEASURES
from layerwise.commands.common import DTYPES

DTYPE_HELP = "precision the model runs in, whatever it was saved in: " + " | ".join(DTYPES)
OVERWRITE_HELP = "write into a folder that holds other files"


@app.command("analyze")
def analyze_command(
    model: str = typer.Option("minilm", help="built-in name, model directory, or hub name"),
    data: str = typer.Option("sentences", help="data set name or path (see docs/data.md)"),
    out: Path = typer.Option(Path("runs/analyze"), help="output directory"),
    split: str = typer.Option("test", help="data split"),
    limit: Optional[int] = typer.Option(None, help="use at most this many samples"),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None, help="cls | last | mean (default: the model's own)"),
    measures: str = typer.Option(DEFAULT_MEASURES, help="comma list (see docs/commands/analyze.md), or 'all'"),
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
    lens: str = typer.Option("logit", help="readout metrics: read each layer through logit (the model's own readout) or tuned:DIR"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    log_with: Optional[str] = log_with_option(),
    device_map: Optional[str] = device_map_option(),
    offload_folder: Optional[Path] = offload_option(),
) -> None:
    """Per-layer similarity, readout metrics, probe accuracy, NC1 and residual analysis; writes results.json,
    CSV and figures."""
    results = analyze.run(options(analyze.AnalyzeOptions, locals()))
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
    measures: str = typer.Option(DEFAULT_MEASURES, help="comma list (see docs/commands/analyze.md), or 'all'"),
    sample_cap: int = typer.Option(2000),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Cross-model L_a×L_b similarity matrices on the same inputs."""
    results = compare.run(options(compare.CompareOptions, locals()))
    report_warnings(results)
    typer.echo(f"wrote {out}/results.json")
