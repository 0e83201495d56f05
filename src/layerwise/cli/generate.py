"""``layerwise generate``: flags → ``commands.generate``, then the continuations (or the sweep's table) printed."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import generate as generate_


@app.command()
def generate(
    model: str = typer.Option(..., help="a decoder: built-in name (gpt-tiny, gpt2-tiny, llama-tiny), folder or hub name"),
    prompt: Optional[List[str]] = typer.Option(None, help="text to continue; repeat for a batch (left-padded)"),
    layer: str = typer.Option("last", help="layer k to generate from (0..L), last, or all (one continuation each)"),
    decoding: str = typer.Option("nucleus", help="greedy | sample | nucleus | top-k | contrastive"),
    top_p: float = typer.Option(0.95, help="nucleus mass p in (0, 1]"),
    top_k: Optional[int] = typer.Option(None, help="top-k tokens (sampling) or candidates (contrastive, default 4)"),
    temperature: float = typer.Option(1.0, help="softmax temperature > 0"),
    alpha: float = typer.Option(0.6, help="contrastive search's degeneration penalty α in [0, 1]"),
    max_new_tokens: int = typer.Option(64, help="tokens to generate per prompt (fewer when EOS comes first)"),
    seed: int = typer.Option(0, help="sampling seed (runs are reproducible)"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="key/value cache (--no-cache: recompute, for checks)"),
    speculative: bool = typer.Option(False, "--speculative", help="self-speculative decoding: draft with layers "
                                     "1..--exit-layer, verify with the full model (same output as the full model)"),
    exit_layer: Optional[int] = typer.Option(None, help="draft layer E of --speculative [L/2]"),
    num_draft: int = typer.Option(4, help="tokens drafted per round with --speculative"),
    draft_vocab: Optional[int] = typer.Option(None, help="--speculative: draft with the LM head's rows of the V' "
                                              "most frequent training tokens (counts saved by new-gpt) [all]"),
    early_exit: bool = typer.Option(False, "--early-exit", help="per-token early exit (CALM): each token leaves "
                                    "at the first layer where --policy is met"),
    policy: str = typer.Option("confidence", help="early-exit policy: confidence | entropy | patience | saturation | "
                               "classifier (needs train-exit-classifier), or any registered policy"),
    threshold: float = typer.Option(0.9, help="early-exit threshold τ (confidence ≥ τ, entropy ≤ τ nats, patience k, "
                                    "saturation cos(hˡ, hˡ⁻¹) ≥ τ, classifier probability ≥ τ)"),
    check_every: int = typer.Option(1, help="--early-exit: evaluate the exit signal only every k-th layer"),
    min_layer: int = typer.Option(1, help="first layer a token may exit at"),
    max_layer: Optional[int] = typer.Option(None, help="last layer: every token exits there at the latest [L]"),
    kv_fill: str = typer.Option("propagate", help="keys/values of skipped layers: propagate (the exited state, "
                                "CALM) | recompute (run them in full)"),
    sweep: Optional[str] = typer.Option(None, help="early exit at each threshold τ1,τ2,… against full decoding: "
                                        "speed and quality to --out (results.json, token_exit.png)"),
    out: Optional[Path] = typer.Option(None, help="output folder of --sweep"),
    data: Optional[str] = typer.Option(None, help="--sweep prompts from this corpus's paragraph starts "
                                       "(wikitext2, tinyshakespeare, a .txt file) instead of --prompt"),
    split: str = typer.Option("test", help="corpus split of --data"),
    num_prompts: int = typer.Option(32, help="--sweep prompts taken from --data"),
    prefix_len: int = typer.Option(32, help="prompt length in tokens with --data"),
    batch_size: int = typer.Option(8, help="--sweep prompts generated together"),
    repeats: int = typer.Option(1, help="--sweep timing repeats after a warm-up"),
    embedder: str = typer.Option("minilm", help="--sweep coherence embedder (as gen-eval)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    lens: str = typer.Option("logit", help="read layer k through logit (the model's own readout) or tuned:DIR"),
    overwrite: bool = typer.Option(False, "--overwrite", help="--sweep: write into a folder that holds other files"),
) -> None:
    """Print the continuation of each prompt generated from layer k (or from every layer)."""
    o = options(generate_.GenerateOptions, locals())
    result = generate_.run(o)
    if result["mode"] == "layers":
        layers = result["layers"]
        for k, texts in layers.items():
            for text in texts:
                typer.echo(f"[layer {k}] {text}" if len(layers) > 1 else text)
    elif result["mode"] == "speculative":
        stats = result["stats"]
        for text in result["texts"]:
            typer.echo(text)
        typer.echo(f"speculative: exit layer {result['exit_layer']}, {o.num_draft} drafted a round, "
                   f"acceptance {stats.acceptance_rate:.2f} over {stats.rounds} rounds", err=True)
    elif result["mode"] == "early_exit":
        stats = result["stats"]
        for text in result["texts"]:
            typer.echo(text)
        typer.echo(f"early exit ({o.policy} τ={o.threshold:g}, every {o.check_every} layers, kv fill {o.kv_fill}): "
                   f"mean exit layer "
                   f"{stats['mean_exit_layer']:.2f} of {result['num_layers']}, exits per layer "
                   f"{stats['exit_histogram']}; theoretical speedup: blocks {stats['layer_speedup']:.2f}×, weights "
                   f"touched (readouts and K/V fills counted) {stats['compute_speedup']:.2f}×", err=True)
    else:
        _print_sweep(result["sweep"], o.out)


def _print_sweep(results: dict, out: Path) -> None:
    for row in [results["full"], *results["sweep"]]:
        t = "full" if row["threshold"] is None else f"τ={row['threshold']:g}"
        typer.echo(f"{t:>10}  speedup {row['speedup']:.2f}× (theory: L/mean exit {row['layer_speedup']:.2f}×, "
                   f"weights {row['compute_speedup']:.2f}×)  mean exit layer {row['mean_exit_layer']:.2f}  "
                   f"perplexity {row['perplexity']:.1f}  coherence {row['coherence']:.3f}  "
                   f"diversity {row['diversity']['words']:.3f}")
    typer.echo(f"wrote {out}/results.json and {out}/token_exit.png")
