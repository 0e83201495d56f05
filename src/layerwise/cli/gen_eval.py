"""``layerwise gen-eval``: flags → ``commands.gen_eval``."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwise.cli.app import app, options
from layerwise.commands import gen_eval


@app.command("gen-eval")
def gen_eval_command(
    model: list[str] = typer.Option(..., "--model", help="language model (repeat --model to compare several)"),
    data: str = typer.Option("wikitext2", help="text corpus: wikitext2, tinyshakespeare or a .txt file"),
    split: str = typer.Option("test"),
    out: Path = typer.Option(Path("runs/gen-eval"), help="output directory"),
    num_prompts: int = typer.Option(100, help="prompts taken from the corpus (at paragraph starts)"),
    prefix_len: int = typer.Option(32, help="prompt length in the model's tokens"),
    max_new_tokens: int = typer.Option(128, help="continuation length in tokens (also the reference's)"),
    decoding: str = typer.Option("nucleus", help="greedy | sample | nucleus | top-k | contrastive"),
    top_p: float = typer.Option(0.95, help="nucleus mass p"),
    top_k: int | None = typer.Option(None, help="top-k (contrastive search: candidates, default 4)"),
    temperature: float = typer.Option(1.0),
    alpha: float = typer.Option(0.6, help="contrastive search's degeneration penalty α"),
    batch_size: int = typer.Option(16, help="prompts generated together"),
    eval_batch_size: int = typer.Option(16, help="blocks per batch when scoring accuracy and perplexity"),
    seq_len: int | None = typer.Option(None, help="tokens per scoring block (default min(128, context))"),
    limit: int | None = typer.Option(None, help="score accuracy/perplexity on this many blocks (seeded)"),
    layer_zero: bool = typer.Option(False, "--layer-zero", help="also generate from layer 0 (the embeddings)"),
    embedder: str = typer.Option("minilm", help="coherence embedder: minilm, a sentence-transformers or HF "
                                                "encoder directory, or a hub name when online"),
    diversity: str = typer.Option("words", help="tokens | words | simctg (all three go to results.json)"),
    samples: int = typer.Option(3, help="prompts whose continuations go to samples.txt"),
    seed: int = typer.Option(0, help="prompt choice and sampling seed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    data_dir: Path | None = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    lens: list[str] = typer.Option(["logit"], "--lens", help="logit or tuned:DIR, once or once per --model"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
) -> None:
    """Generate from every layer after corpus prompts and score it (Figure 8): accuracy, perplexity, coherence,
    diversity per layer; writes results.json, layers.csv, generation.png and samples.txt."""
    gen_eval.run(options(gen_eval.GenEvalOptions, locals()))
    typer.echo(f"wrote {out}/results.json")
