"""``layerwise new-gpt``: flags → ``commands.new_gpt``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import new_gpt


@app.command("new-gpt")
def new_gpt_command(
    corpus: List[str] = typer.Option(..., help="NAME[:SPLIT] to train the tokenizer on, repeatable "
                                               "(tinyshakespeare, wikitext2:valid, file.txt)"),
    out: Path = typer.Option(..., help="new model directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a model new-gpt wrote there before"),
    vocab_size: int = typer.Option(8192, help="BPE vocabulary size, including the end-of-text token"),
    depth: int = typer.Option(8, help="blocks"),
    dim: int = typer.Option(256, help="width"),
    heads: int = typer.Option(8, help="attention heads (must divide --dim)"),
    max_len: int = typer.Option(256, help="context length in tokens"),
    seed: int = typer.Option(0, help="initialisation seed"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
) -> None:
    """Initialise an own GPT and train its byte-level BPE tokenizer; `layerwise train --model OUT` trains it."""
    made = new_gpt.run(options(new_gpt.NewGPTOptions, locals()))
    typer.echo(f"wrote {out}: GPT with {depth} blocks, {dim} wide, {made['parameters'] / 1e6:.1f}M parameters, "
               f"BPE of {made['tokens']} tokens")
