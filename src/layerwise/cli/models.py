"""``layerwise models``: ``commands.models``, printed."""

from __future__ import annotations

import typer

from layerwise.cli.app import app
from layerwise.commands import models as models_


@app.command()
def models() -> None:
    """List the built-in model names and the supported architectures."""
    listed = models_.run(models_.ModelsOptions())
    for name, text in listed["models"].items():
        typer.echo(f"{name:14s} {text}")
    typer.echo("\narchitectures: " + "; ".join(listed["architectures"]))
