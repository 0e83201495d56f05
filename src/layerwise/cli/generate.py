"""``layerwise generate``: continue a prompt from any layer k (readout(hᵏ): the final norm and the LM head), with
self-speculative decoding (``--speculative``) or per-token early exit (``--early-exit``, ``--sweep`` over
thresholds with ``--out``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Literal, Optional

import typer
from pydantic import Field, PositiveInt

from layerwise.cli.app import Flags, app, check_flags, check_out_dir
from layerwise.errors import LayerwiseError


class GenerateFlags(Flags):
    max_new_tokens: int = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    temperature: float = Field(gt=0, allow_inf_nan=False)
    top_k: Optional[int] = Field(default=None, gt=0)
    alpha: float = Field(ge=0, le=1)
    seed: int = Field(ge=0)
    num_draft: int = Field(gt=0)
    policy: Literal["confidence", "entropy", "patience"]
    threshold: float = Field(allow_inf_nan=False)
    min_layer: PositiveInt
    max_layer: Optional[PositiveInt] = None
    kv_fill: Literal["propagate", "recompute"]
    num_prompts: PositiveInt
    prefix_len: PositiveInt
    batch_size: PositiveInt
    repeats: PositiveInt


def _thresholds(text: str) -> list[float]:
    """``0.5,0.7,0.9`` → [0.5, 0.7, 0.9]; each a finite number (the policy checks its own range)."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise LayerwiseError(f"--sweep {text!r}: pass finite thresholds separated by commas, e.g. 0.5,0.7,0.9")
    return values


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
    early_exit: bool = typer.Option(False, "--early-exit", help="per-token early exit (CALM): each token leaves "
                                    "at the first layer where --policy is met"),
    policy: str = typer.Option("confidence", help="early-exit policy: confidence | entropy | patience"),
    threshold: float = typer.Option(0.9, help="early-exit threshold τ (confidence ≥ τ, entropy ≤ τ nats, patience k)"),
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
) -> None:
    """Print the continuation of each prompt generated from layer k (or from every layer)."""
    check_flags(GenerateFlags, max_new_tokens=max_new_tokens, top_p=top_p, temperature=temperature, top_k=top_k,
                alpha=alpha, seed=seed, num_draft=num_draft, policy=policy, threshold=threshold, min_layer=min_layer,
                max_layer=max_layer, kv_fill=kv_fill, num_prompts=num_prompts, prefix_len=prefix_len,
                batch_size=batch_size, repeats=repeats)
    exit_options = _check_exit_flags(early_exit, sweep, speculative, layer, out, data, prompt)
    if data is None and (not prompt or any(not p.strip() for p in prompt)):
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
    if early_exit:
        from layerwise.inference.policies import make_policy
        from layerwise.inference.token_exit import check_token_exit

        for t in exit_options or [threshold]:  # every setting refused before any generation
            check_token_exit(stack, make_policy(policy, t, min_layer, max_layer), kv_fill, strategy)
        stack.model.to(dev)
        if sweep is not None:
            _sweep(bundle, model, prompt, exit_options, policy=policy, min_layer=min_layer, max_layer=max_layer,
                   kv_fill=kv_fill, decoding=strategy, max_new_tokens=max_new_tokens, seed=seed, out=out, data=data,
                   split=split, num_prompts=num_prompts, prefix_len=prefix_len, batch_size=batch_size,
                   repeats=repeats, embedder=embedder, device=dev)
            return
        _early_exit(stack, tokenizer, prompt, make_policy(policy, threshold, min_layer, max_layer), kv_fill, strategy,
                    max_new_tokens, seed)
        return
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


def _check_exit_flags(early_exit: bool, sweep: str | None, speculative: bool, layer: str, out: Path | None,
                      data: str | None, prompt: list[str] | None) -> list[float] | None:
    """The combinations --early-exit allows; the --sweep thresholds (None without --sweep)."""
    if (sweep is not None or data is not None) and not early_exit:
        raise LayerwiseError("--sweep and --data go with --early-exit: add --early-exit")
    if not early_exit:
        return None
    if speculative:
        raise LayerwiseError("--early-exit and --speculative are two decoders: pick one")
    if layer != "last":
        raise LayerwiseError(f"--early-exit chooses each token's layer itself: drop --layer {layer} "
                             "(use --max-layer to cap it)")
    if sweep is None:
        if data is not None:
            raise LayerwiseError("--data gives prompts to --sweep: add --sweep τ1,τ2,… or use --prompt")
        return None
    if out is None:
        raise LayerwiseError("--sweep writes results.json and token_exit.png: pass --out DIR")
    if data is not None and prompt:
        raise LayerwiseError("--sweep takes prompts from --data or from --prompt, not both")
    thresholds = _thresholds(sweep)
    check_out_dir(out)
    return thresholds


def _early_exit(stack, tokenizer, prompts: list[str], policy, kv_fill: str, strategy, max_new_tokens: int,
                seed: int) -> None:
    from layerwise.inference.token_exit import token_exit_text

    texts, result = token_exit_text(stack, tokenizer, prompts, policy, kv_fill=kv_fill, decoding=strategy,
                                    max_new_tokens=max_new_tokens, seed=seed)
    for text in texts:
        typer.echo(text)
    stats = result.stats()
    typer.echo(f"early exit ({policy.name} τ={policy.threshold:g}, kv fill {kv_fill}): mean exit layer "
               f"{stats['mean_exit_layer']:.2f} of {stack.num_layers}, exits per layer {stats['exit_histogram']}; "
               f"theoretical speedup: blocks {stats['layer_speedup']:.2f}×, weights touched (readouts and K/V "
               f"fills counted) {stats['compute_speedup']:.2f}×", err=True)


def _sweep(bundle, name: str, prompt: list[str] | None, thresholds: list[float], *, out: Path, data: str | None,
           split: str, num_prompts: int, prefix_len: int, max_new_tokens: int, embedder: str, device, **options) -> None:
    from layerwise.evaluation.exit_sweep import sweep_token_exit
    from layerwise.evaluation.gen_eval import GenEvalSettings, model_prompts, select_offsets
    from layerwise.evaluation.generation_metrics import Embedder
    from layerwise.inference.generation import encode_prompts, special_ids
    from layerwise.report.writers import write_token_exit

    tok = bundle.inputs.tokenizer
    if data is not None:
        from layerwise.data import load_dataset
        from layerwise.evaluation.gen_eval import check_corpus

        ds = load_dataset(data, split=split)
        check_corpus(ds, num_prompts)
        settings = GenEvalSettings(num_prompts=num_prompts, prefix_len=prefix_len, max_new_tokens=max_new_tokens)
        prompts = model_prompts(tok, ds.text or "", select_offsets(ds.text or "", [tok], settings), settings)
        ids, texts = prompts.prefix_ids, prompts.prefix_texts
    else:
        ids, texts = encode_prompts(tok, prompt), list(prompt)
    scorer = Embedder(embedder, device=str(device))
    eos, pad = special_ids(bundle.stack, tok)
    results = sweep_token_exit(bundle.stack, ids, thresholds, max_new_tokens=max_new_tokens, eos_token_id=eos,
                               pad_token_id=pad, tokenizer=tok, embedder=scorer, prefix_texts=texts, **options)
    results.update(model=name, data=data, split=split if data else None, embedder=scorer.describe())
    write_token_exit([results], out)
    for row in [results["full"], *results["sweep"]]:
        t = "full" if row["threshold"] is None else f"τ={row['threshold']:g}"
        typer.echo(f"{t:>10}  speedup {row['speedup']:.2f}× (theory: L/mean exit {row['layer_speedup']:.2f}×, "
                   f"weights {row['compute_speedup']:.2f}×)  mean exit layer {row['mean_exit_layer']:.2f}  "
                   f"perplexity {row['perplexity']:.1f}  coherence {row['coherence']:.3f}  diversity {row['diversity']['words']:.3f}")
    typer.echo(f"wrote {out}/results.json and {out}/token_exit.png")
