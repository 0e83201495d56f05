"""``layerwise new-gpt``: a fresh own GPT plus a byte-level BPE trained on its corpora, ready for ``train``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from pydantic import Field

from layerwise.cli.app import Flags, app, check_flags, check_out_dir
from layerwise.errors import LayerwiseError


class NewGPTFlags(Flags):
    vocab_size: int = Field(ge=257)
    depth: int = Field(gt=0)
    dim: int = Field(gt=0)
    heads: int = Field(gt=0)
    max_len: int = Field(gt=0)


@app.command("new-gpt")
def new_gpt_command(
    corpus: List[str] = typer.Option(..., help="NAME[:SPLIT] to train the tokenizer on, repeatable "
                                               "(tinyshakespeare, wikitext2:valid, file.txt)"),
    out: Path = typer.Option(..., help="new model directory (must be empty or absent)"),
    vocab_size: int = typer.Option(8192, help="BPE vocabulary size, including the end-of-text token"),
    depth: int = typer.Option(8, help="blocks"),
    dim: int = typer.Option(256, help="width"),
    heads: int = typer.Option(8, help="attention heads (must divide --dim)"),
    max_len: int = typer.Option(256, help="context length in tokens"),
    seed: int = typer.Option(0, help="initialisation seed"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
) -> None:
    """Initialise an own GPT and train its byte-level BPE tokenizer; `layerwise train --model OUT` trains it."""
    flags = check_flags(NewGPTFlags, vocab_size=vocab_size, depth=depth, dim=dim, heads=heads, max_len=max_len)
    if flags.dim % flags.heads:
        raise LayerwiseError(f"--heads {heads} does not divide --dim {dim}: pick a divisor")
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        raise LayerwiseError(f"--out {out} is not an empty folder: pass a new one (nothing is overwritten)")
    check_out_dir(out)
    from layerwise.checkpoints import save_model
    from layerwise.checkpoints.new import corpus_texts, new_gpt
    from layerwise.models import GPTConfig

    texts = corpus_texts(corpus, data_dir)
    bundle = new_gpt(texts, vocab_size, GPTConfig(max_len=max_len, dim=dim, depth=depth, heads=heads), seed)
    save_model(bundle, out)
    n = sum(p.numel() for p in bundle.model.parameters())
    typer.echo(f"wrote {out}: GPT with {depth} blocks, {dim} wide, {n / 1e6:.1f}M parameters, "
               f"BPE of {len(bundle.inputs.tokenizer)} tokens")
