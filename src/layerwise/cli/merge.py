"""``layerwise merge``: flags → ``commands.merge``."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwise.cli.app import app, options
from layerwise.commands import merge


@app.command("merge")
def merge_command(
    model: str = typer.Option(..., help="a LoRA run folder (train --peft lora)"),
    out: Path = typer.Option(..., help="output model directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
) -> None:
    """Fold a LoRA run's adapters into the weights and save a plain model folder."""
    typer.echo(f"wrote {merge.run(options(merge.MergeOptions, locals()))}")
