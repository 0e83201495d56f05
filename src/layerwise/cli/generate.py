"""``layerwise generate``: continue a prompt from any layer k (readout(hᵏ): the final norm and the LM head)."""

from __future__ import annotations

from typing import List, Optional

import typer
from pydantic import Field

from layerwise.cli.app import Flags, app, check_flags
from layerwise.errors import LayerwiseError


class GenerateFlags(Flags):
    max_new_tokens: int = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    temperature: float = Field(gt=0, allow_inf_nan=False)
    top_k: Optional[int] = Field(default=None, gt=0)
    alpha: float = Field(ge=0, le=1)
    seed: int = Field(ge=0)
    num_draft: int = Field(gt=0)


def _layers(text: str, depth: int) -> list[int]:
    """``all`` → 1..L; otherwise one layer number (its range is checked against the model)."""
    if text == "all":
        return list(range(1, depth + 1))
    try:
        return [int(text)]
    except ValueError:
        raise LayerwiseError(f"--layer {text!r}: pass a layer number 0..{depth} or all") from None


@app.command()
def generate(
    model: str = typer.Option(..., help="a decoder: built-in name (gpt-tiny, gpt2-tiny, llama-tiny), folder or hub name"),
    prompt: List[str] = typer.Option(..., help="text to continue; repeat for a batch (left-padded)"),
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
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
) -> None:
    """Print the continuation of each prompt generated from layer k (or from every layer)."""
    check_flags(GenerateFlags, max_new_tokens=max_new_tokens, top_p=top_p, temperature=temperature, top_k=top_k,
                alpha=alpha, seed=seed, num_draft=num_draft)
    if any(not p.strip() for p in prompt):
        raise LayerwiseError("--prompt is empty: give text to continue")
    from layerwise.device import pick_device
    from layerwise.inference.decoding import make_decoding

    strategy = make_decoding(decoding, temperature=temperature, top_k=top_k, top_p=top_p, alpha=alpha)
    dev = pick_device(device)
    from layerwise.checkpoints import load_model
    from layerwise.inference.generation import check_generation, encode_prompts, generate_text

    bundle = load_model(model)
    stack, tokenizer = bundle.stack, bundle.inputs.tokenizer
    if stack.task != "lm":
        raise LayerwiseError(f"{model} is a {stack.task} model, not a language model: generate needs a decoder")
    ids = encode_prompts(tokenizer, prompt)
    if speculative:
        _speculate(stack, tokenizer, prompt, strategy, exit_layer or max(1, stack.num_layers // 2), num_draft,
                   max_new_tokens, seed, dev)
        return
    layers = _layers(str(stack.num_layers) if layer == "last" else layer, stack.num_layers)
    for k in layers:
        check_generation(stack, k, ids, max_new_tokens)
    stack.model.to(dev)
    for k in layers:
        texts = generate_text(stack, tokenizer, prompt, k, decoding=strategy, max_new_tokens=max_new_tokens,
                              seed=seed, use_cache=cache)
        for text in texts:
            typer.echo(f"[layer {k}] {text}" if len(layers) > 1 else text)


def _speculate(stack, tokenizer, prompts: list[str], strategy, exit_layer: int, num_draft: int,
               max_new_tokens: int, seed: int, device) -> None:
    from layerwise.inference.speculative import speculative_text

    if not 1 <= exit_layer < stack.num_layers:  # the rest is checked by speculative_generate, before any work
        raise LayerwiseError(f"--exit-layer {exit_layer}: draft with layers 1..E, E in 1..{stack.num_layers - 1}")
    stack.model.to(device)
    texts, stats = speculative_text(stack, tokenizer, prompts, exit_layer, num_draft, decoding=strategy,
                                    max_new_tokens=max_new_tokens, seed=seed)
    for text in texts:
        typer.echo(text)
    typer.echo(f"speculative: exit layer {exit_layer}, {num_draft} drafted a round, "
               f"acceptance {stats.acceptance_rate:.2f} over {stats.rounds} rounds", err=True)
