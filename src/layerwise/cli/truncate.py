"""``layerwise truncate``: flags → ``commands.truncate``."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwise.cli.app import app, options
from layerwise.commands import truncate


@app.command("truncate")
def truncate_command(
    model: str = typer.Option(..., help="model to cut"),
    k: int = typer.Option(..., help="keep blocks 1..k and the readout (or exit head k)"),
    out: Path = typer.Option(..., help="output model directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
) -> None:
    """Export the first k blocks plus the readout as a standalone model."""
    typer.echo(f"wrote {truncate.run(options(truncate.TruncateOptions, locals()))}")
