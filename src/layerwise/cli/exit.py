"""``layerwise exit``: flags → ``commands.exit``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.cli.scale import log_with_option
from layerwise.commands import exit as exit_


@app.command("exit")
def exit_command(
    model: list[str] = typer.Option(..., "--model", help="model (repeat --model to compare several)"),
    data: str = typer.Option(..., help="labelled classification data set"),
    policy: str = typer.Option("confidence", help="confidence | entropy | patience, or any registered policy"),
    threshold: float = typer.Option(0.9, help="τ: max softmax ≥ τ, entropy ≤ τ, or patience k"),
    check_every: int = typer.Option(1, help="evaluate the exit signal only every k-th layer (and at the last)"),
    out: Path = typer.Option(Path("runs/exit"), help="output directory"),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    min_layer: int = typer.Option(1, help="first layer that may exit"),
    max_layer: Optional[int] = typer.Option(None, help="last layer (default L): everything left exits there"),
    calibrate_eps: float = typer.Option(0.01, help="allowed accuracy drop on the validation split"),
    val_split: str = typer.Option("0.5", help="fraction of the data held out for calibration, or a split name"),
    delta: float = typer.Option(0.01, help="minimal depth: smallest k within δ of the best layer"),
    shift_data: Optional[str] = typer.Option(None, help="also report per-layer accuracy on this data set"),
    shift_augment: bool = typer.Option(False, "--shift-augment",
                                       help="shift = the evaluation data under the training augmentations"),
    transfer_data: Optional[str] = typer.Option(
        None, help="transfer task: one linear head fitted on the frozen last layer, applied after every layer"),
    transfer_splits: str = typer.Option("train,test", help="transfer task: fit split,test split"),
    transfer_limit: Optional[int] = typer.Option(2000, help="transfer task: examples per split (seeded)"),
    repeats: int = typer.Option(1, help="timing repeats (median)"),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
    lens: list[str] = typer.Option(["logit"], "--lens", help="logit or tuned:DIR, once or once per --model"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
    log_with: Optional[str] = log_with_option(),
) -> None:
    """Early-exit evaluation: accuracy, exit histogram, speedups, threshold sweep, calibration, minimal depth."""
    exit_.run(options(exit_.ExitOptions, locals()))
    typer.echo(f"wrote {out}/results.json")
