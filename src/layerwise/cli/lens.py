"""``layerwise lens``: flags → ``commands.lens``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import lens


@app.command("lens")
def lens_command(
    model: str = typer.Option(..., help="language model or classifier: built-in name, folder or hub name"),
    data: str = typer.Option(..., help="data set or corpus the lens is trained and scored on"),
    out: Path = typer.Option(Path("runs/lens"), help="run folder; the lens is saved there (lens.safetensors)"),
    train_split: str = typer.Option("train", help="split the lens is trained on (wikitext2 here: valid)"),
    eval_split: str = typer.Option("test", help="split every layer is scored on"),
    epochs: int = typer.Option(1),
    batch_size: int = typer.Option(8),
    eval_batch_size: Optional[int] = typer.Option(None),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(0.0),
    schedule: str = typer.Option("cosine", help="constant | cosine | multistep (after --warmup-steps)"),
    warmup_steps: int = typer.Option(0),
    max_grad_norm: Optional[float] = typer.Option(1.0),
    seq_len: int = typer.Option(128, help="language models: tokens per block"),
    limit: Optional[int] = typer.Option(None, help="training examples (blocks of a corpus), seeded"),
    eval_limit: Optional[int] = typer.Option(None, help="evaluation examples, seeded"),
    checkpoint_every: Optional[int] = typer.Option(None, help="optimizer steps between checkpoints"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples of the 95 % intervals"),
    baseline: Optional[Path] = typer.Option(None, help="another lens run folder, same evaluation data: drawn beside"),
    seed: int = typer.Option(0),
    data_dir: Optional[Path] = typer.Option(None),
    cpu: bool = typer.Option(False, "--cpu", help="train on the CPU even where a GPU is found"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    resume: bool = typer.Option(False, "--resume", help="require a checkpoint to resume from"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
) -> None:
    """Train a tuned lens (one affine translator per layer, KL to the last layer) and score both lenses per layer."""
    lens.run(options(lens.LensOptions, locals()))
    typer.echo(f"wrote {out}/lens.safetensors and {out}/results.json")
