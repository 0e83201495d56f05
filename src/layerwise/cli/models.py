"""``layerwise models``."""

from __future__ import annotations

import typer

from layerwise.cli.app import app


@app.command()
def models() -> None:
    """List the built-in model names and the supported architectures."""
    from layerwise.checkpoints import describe_models
    from layerwise.stack import supported_architectures

    for name, text in describe_models().items():
        typer.echo(f"{name:14s} {text}")
    typer.echo("\narchitectures: " + "; ".join(supported_architectures()))
