"""``layerwise truncate``."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwise.cli.app import app, check_out_dir


def truncate_model(spec: str, k: int, out: str | Path) -> Path:
    """Load ``spec``, keep blocks 1..k and the readout serving layer k, save to ``out``."""
    from layerwise.checkpoints import load_model, save_model, truncate

    check_out_dir(Path(out))
    return save_model(truncate(load_model(spec), k), out)


@app.command("truncate")
def truncate_command(
    model: str = typer.Option(..., help="model to cut"),
    k: int = typer.Option(..., help="keep blocks 1..k and the readout (or exit head k)"),
    out: Path = typer.Option(..., help="output model directory"),
) -> None:
    """Export the first k blocks plus the readout as a standalone model."""
    typer.echo(f"wrote {truncate_model(model, k, out)}")
