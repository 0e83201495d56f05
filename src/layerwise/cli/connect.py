"""``layerwise connect``: flags → ``commands.connect``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import connect


@app.command("connect")
def connect_command(
    model_a: str = typer.Option(..., "--model-a", help="model A (built-in name or directory)"),
    model_b: str = typer.Option(..., "--model-b", help="model B, of A's architecture"),
    data: str = typer.Option(..., help="evaluation data set (labelled, or a corpus for language models)"),
    mode: list[str] = typer.Option(["single"], "--mode", help="full | single | cumulative | random (repeatable)"),
    out: Path = typer.Option(Path("runs/connect"), help="output directory"),
    alphas: Optional[str] = typer.Option(None, help="α grid, comma list in [0, 1] [11 points, 0 to 1]"),
    split: str = typer.Option("test", help="evaluation split"),
    limit: Optional[int] = typer.Option(None, help="evaluation examples (seeded subset; corpus: blocks)"),
    batch_size: int = typer.Option(64),
    seq_len: int = typer.Option(128, help="language models: tokens per evaluation block"),
    bn_reset: bool = typer.Option(True, "--bn-reset/--no-bn-reset",
                                  help="re-estimate BatchNorm statistics at every interpolated point"),
    bn_split: str = typer.Option("train", help="split the BatchNorm statistics are re-estimated on"),
    bn_limit: int = typer.Option(2000, help="examples for BatchNorm re-estimation"),
    match: bool = typer.Option(False, "--match", help="also permute B's units to A's (weight matching) first"),
    readout_from_b: bool = typer.Option(False, "--readout-from-b",
                                        help="A reads out through B's readout (pretrained body vs fine-tuned)"),
    random_seeds: int = typer.Option(3, help="random mode: directions averaged per group"),
    filter_norm: bool = typer.Option(False, "--filter-norm", help="random mode: filter-normalised directions"),
    baseline: str = typer.Option("models", help="barrier line: models (joins ℒ(A), ℒ(B)) | path (each path's "
                                 "own ends ℒ(θ(0)), ℒ(θ(1)))"),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
) -> None:
    """Layer-wise linear mode connectivity: loss and error barriers when groups of layers are interpolated."""
    connect.run(options(connect.ConnectOptions, locals()))
    typer.echo(f"wrote {out}/results.json")
