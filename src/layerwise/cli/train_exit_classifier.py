"""``layerwise train-exit-classifier``: flags → ``commands.train_exit_classifier``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import train_exit_classifier as train_exit_classifier_


@app.command("train-exit-classifier")
def train_exit_classifier_command(
    model: Path = typer.Option(..., help="a saved language model's folder; the classifier is written into it"),
    data: str = typer.Option(..., help="corpus the model's outputs are read on (tinyshakespeare, wikitext2, .txt)"),
    split: str = typer.Option("train", help="corpus split of --data"),
    limit: Optional[int] = typer.Option(64, help="blocks of --seq-len tokens (a seeded subset)"),
    batch_size: int = typer.Option(16, help="blocks per forward pass"),
    seq_len: int = typer.Option(128, help="tokens per block"),
    seed: int = typer.Option(0, help="seed of the --limit subset"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an exit classifier saved there before"),
) -> None:
    """Fit the exit classifier of `generate --early-exit --policy classifier` and save it with the model."""
    made = train_exit_classifier_.run(options(train_exit_classifier_.TrainExitClassifierOptions, locals()))
    agreement = made["meta"]["agreement_with_last_layer"]
    typer.echo(f"wrote {model}: exit classifier of {made['num_layers']} layers on {made['meta']['tokens']} tokens; "
               f"layer 1 agrees with the last on {agreement[0]:.0%} of them")
