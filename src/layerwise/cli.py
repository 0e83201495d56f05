"""The ``layerwise`` command line. Each command is a thin wrapper over one library module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from layerwise.errors import LayerwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Study how representations move through the layers of a transformer, and use it.")


@app.command()
def models() -> None:
    """List the built-in model names and the supported architectures."""
    from layerwise.adapters import supported_architectures
    from layerwise.zoo import describe_models

    for name, text in describe_models().items():
        typer.echo(f"{name:14s} {text}")
    typer.echo("\narchitectures: " + "; ".join(supported_architectures()))


@app.command()
def analyze(
    model: str = typer.Option("minilm", help="built-in name, model directory, or hub name"),
    data: str = typer.Option("sentences", help="data set name or path (see README)"),
    out: Path = typer.Option(Path("runs/analyze"), help="output directory"),
    split: str = typer.Option("test", help="data split"),
    limit: Optional[int] = typer.Option(None, help="use at most this many samples"),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None, help="cls | last | mean (default: the model's own)"),
    measures: str = typer.Option("cos,cka_linear,cka_linear_debiased", help="comma list, or 'all'"),
    sample_cap: int = typer.Option(2000, help="max samples for measures that need N×N structure"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0),
) -> None:
    """Per-layer similarity, readout accuracy and residual analysis; writes results.json, CSV and figures."""
    from layerwise.analysis import run_analysis

    run_analysis(model=model, data=data, out=out, split=split, limit=limit, batch_size=batch_size, pooling=pooling,
                 measures=measures, sample_cap=sample_cap, data_dir=data_dir, device=device, seed=seed)
    typer.echo(f"wrote {out}/results.json")


@app.command()
def compare(
    model_a: str = typer.Option(..., "--model-a"),
    model_b: str = typer.Option(..., "--model-b"),
    data: str = typer.Option("sentences"),
    out: Path = typer.Option(Path("runs/compare")),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None),
    measures: str = typer.Option("cos,cka_linear,cka_linear_debiased", help="comma list, or 'all'"),
    sample_cap: int = typer.Option(2000),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Cross-model L_a×L_b similarity matrices on the same inputs."""
    from layerwise.analysis import run_compare

    run_compare(model_a=model_a, model_b=model_b, data=data, out=out, split=split, limit=limit,
                batch_size=batch_size, pooling=pooling, measures=measures, sample_cap=sample_cap,
                data_dir=data_dir, device=device, seed=seed)
    typer.echo(f"wrote {out}/results.json")


# --- train command: owned by training (layerwise/training.py) ---


# --- exit / truncate commands: owned by serving (layerwise/early_exit.py) ---


def main() -> None:
    """Entry point: bad input prints one line and exits 2, without a traceback."""
    try:
        app()
    except LayerwiseError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
