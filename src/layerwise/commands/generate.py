"""``generate``: continue prompts from any layer k (readout(hᵏ): the final norm and the LM head), with
self-speculative decoding (``speculative``) or per-token early exit (``early_exit``; ``sweep`` over thresholds
against full decoding, written to ``out``: results.json, token_exit.png).

``run`` returns what it generated: ``{"mode": "layers", "layers": {k: texts}}``, ``{"mode": "speculative",
"texts", "stats"}``, ``{"mode": "early_exit", "texts", "stats"}`` or ``{"mode": "sweep", "sweep": results}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveInt

from layerwise.commands.common import CommandOptions, Folder, only_with
from layerwise.run_folder import open_run_folder
from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.inference.token_exit import TokenExitResult
    from layerwise.stack import LayerStack

OUTPUTS = ("results.json", "token_exit.png")  # with `sweep` only; otherwise nothing is written


class GenerateOptions(CommandOptions):
    """The options of ``generate`` (the decoding checks its own parameters against the model)."""

    model: str  # a decoder: built-in name (gpt-tiny, gpt2-tiny, llama-tiny), folder or hub name
    prompt: list[str] | None = None  # texts to continue, one batch (left-padded)
    layer: str = "last"  # layer k to generate from (0..L), last, or all
    decoding: str = "nucleus"  # greedy | sample | nucleus | top-k | contrastive
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    alpha: float = Field(0.6, ge=0, le=1)  # contrastive search's degeneration penalty α
    max_new_tokens: int = Field(64, gt=0)
    seed: int = Field(0, ge=0)
    cache: bool = True  # key/value cache (False: recompute, for checks)
    speculative: bool = False  # draft with layers 1..exit_layer, verify with the full model
    exit_layer: PositiveInt | None = None  # draft layer E of speculative decoding [L/2]
    num_draft: int = Field(4, gt=0)
    draft_vocab: PositiveInt | None = None  # draft with the head rows of the V′ most frequent training tokens
    early_exit: bool = False  # per-token early exit (CALM): each token leaves where `policy` is met
    policy: str = "confidence"  # a registered exit policy (inference.policies.POLICIES), checked by make_policy
    threshold: float = Field(0.9, allow_inf_nan=False)
    check_every: PositiveInt = 1  # evaluate the exit signal only every k-th layer
    min_layer: PositiveInt = 1
    max_layer: PositiveInt | None = None
    kv_fill: Literal["propagate", "recompute"] = "propagate"
    sweep: str | None = None  # early exit at each threshold "τ1,τ2,…" against full decoding, written to `out`
    out: Folder | None = None
    data: str | None = None  # sweep prompts from this corpus's paragraph starts instead of `prompt`
    split: str = "test"
    num_prompts: PositiveInt = 32
    prefix_len: PositiveInt = 32
    batch_size: PositiveInt = 8
    repeats: PositiveInt = 1
    embedder: str = "minilm"
    device: str = "auto"
    lens: str = "logit"  # how layer k is read: logit | tuned:DIR (the layers mode only)
    overwrite: bool = False


def parse_thresholds(text: str) -> list[float]:
    """``0.5,0.7,0.9`` → [0.5, 0.7, 0.9]; each a finite number (the policy checks its own range)."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise LayerwiseError(f"`sweep` {text!r}: pass finite thresholds separated by commas, e.g. 0.5,0.7,0.9")
    return values


def parse_layers(text: str, depth: int) -> list[int]:
    """``all`` → 1..L, ``last`` → L; otherwise one layer number (its range is checked against the model)."""
    if text in ("all", "last"):
        return list(range(1, depth + 1)) if text == "all" else [depth]
    try:
        return [int(text)]
    except ValueError:
        raise LayerwiseError(f"`layer` {text!r}: pass a layer number 0..{depth} or all") from None


def check_exit_options(o: GenerateOptions) -> list[float] | None:
    """The combinations ``early_exit`` allows, and no option given that the chosen decoder would ignore; the
    ``sweep`` thresholds (None without a sweep)."""
    only_with(o, o.speculative, "`speculative`", "exit_layer", "num_draft", "draft_vocab")
    only_with(o, o.early_exit, "`early_exit`", "policy", "threshold", "check_every", "min_layer", "max_layer",
              "kv_fill")
    only_with(o, o.sweep is not None, "`sweep`", "out", "split", "num_prompts", "prefix_len", "batch_size",
              "repeats", "embedder", "overwrite")
    if o.speculative and o.layer != "last":
        raise LayerwiseError(f"`speculative` drafts with `exit_layer` and verifies with the last layer: drop `layer` "
                             f"{o.layer}", option="layer")
    if (o.sweep is not None or o.data is not None) and not o.early_exit:
        raise LayerwiseError("`sweep` and `data` go with `early_exit`: add `early_exit`")
    if not o.early_exit:
        return None
    if o.speculative:
        raise LayerwiseError("`early_exit` and `speculative` are two decoders: pick one")
    if o.layer != "last":
        raise LayerwiseError(f"`early_exit` chooses each token's layer itself: drop `layer` {o.layer} "
                             "(use `max_layer` to cap it)")
    if o.sweep is None:
        if o.data is not None:
            raise LayerwiseError("`data` gives prompts to `sweep`: add `sweep` τ1,τ2,… or use `prompt`")
        return None
    if o.out is None:
        raise LayerwiseError("`sweep` writes results.json and token_exit.png: pass `out` DIR")
    if o.data is not None and o.prompt:
        raise LayerwiseError("`sweep` takes prompts from `data` or from `prompt`, not both")
    return parse_thresholds(o.sweep)


def exit_policy_options(o: GenerateOptions) -> dict[str, Any]:
    """``make_policy``'s keyword options: ``check_every``, and for the classifier policy the exit classifier saved
    in the model's folder (made by the train-exit-classifier command)."""
    from layerwise.inference.policies import POLICIES

    options: dict[str, Any] = {"check_every": o.check_every}
    if o.early_exit and getattr(POLICIES.get(o.policy), "needs_classifier", False):
        from layerwise.inference.exit_classifier import WEIGHTS, load_exit_classifier

        if not (Path(o.model) / WEIGHTS).is_file():
            raise LayerwiseError(f"{o.model} holds no exit classifier ({WEIGHTS}): make one with the "
                                 "train-exit-classifier command, or pick another `policy`", option="policy")
        options["classifier"] = load_exit_classifier(o.model)
    return options


def draft_vocab(o: GenerateOptions):
    """The ``draft_vocab`` most frequent token ids of the training corpus, from the counts saved with the model."""
    from layerwise.inference.draft_vocab import COUNTS, draft_vocabulary, load_token_counts

    if not (Path(o.model) / COUNTS).is_file():
        raise LayerwiseError(f"{o.model} holds no token counts ({COUNTS}): new-gpt saves them with a new model; "
                             "for another model count its training corpus with inference.draft_vocab.token_counts "
                             "and save them beside it with save_token_counts", option="draft_vocab")
    return draft_vocabulary(load_token_counts(o.model), o.draft_vocab)


def run(options: GenerateOptions) -> dict[str, Any]:
    """Generate as ``options`` ask (see the module's docstring for what is returned); a sweep is written."""
    o = options
    thresholds = check_exit_options(o)
    from layerwise.commands.lens import check_lenses

    check_lenses([o.lens], [o.model])
    if o.lens != "logit" and (o.speculative or o.early_exit):
        raise LayerwiseError("`lens` reads the layer of `layer`; speculative decoding and early exit read through "
                             "the model's own readout: drop `lens`", option="lens")
    if o.data is None and (not o.prompt or any(not p.strip() for p in o.prompt)):
        raise LayerwiseError("`prompt` is empty: give text to continue")
    from layerwise.checkpoints import load_model
    from layerwise.device import pick_device
    from layerwise.inference.decoding import make_decoding
    from layerwise.inference.generation import check_generation, encode_prompts, generate_text
    from layerwise.inference.policies import make_policy

    strategy = make_decoding(o.decoding, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, alpha=o.alpha)
    policy_options = exit_policy_options(o)
    vocab = draft_vocab(o) if o.speculative and o.draft_vocab is not None else None  # before the model loads
    if o.early_exit:  # the policy's name and threshold, before the model loads
        for t in thresholds or [o.threshold]:
            make_policy(o.policy, t, o.min_layer, o.max_layer, **policy_options)
    folder = None if thresholds is None else open_run_folder(Path(o.out), "generate", overwrite=o.overwrite,
                                                              outputs=OUTPUTS)
    dev = pick_device(o.device)
    bundle = load_model(o.model)
    stack, tokenizer = bundle.stack, bundle.inputs.tokenizer
    if stack.task != "lm":
        raise LayerwiseError(f"{o.model} is a {stack.task} model, not a language model: generate needs a decoder")
    if o.early_exit:
        from layerwise.inference.token_exit import check_token_exit, token_exit_text

        for t in thresholds or [o.threshold]:  # every setting refused before any generation
            check_token_exit(stack, make_policy(o.policy, t, o.min_layer, o.max_layer, **policy_options), o.kv_fill,
                             strategy)
        stack.model.to(dev)
        if folder is not None:
            sweep = _sweep(bundle, o, thresholds, strategy, dev, policy_options)
            folder.record()
            return {"mode": "sweep", "sweep": sweep}
        policy = make_policy(o.policy, o.threshold, o.min_layer, o.max_layer, **policy_options)
        texts, result = token_exit_text(stack, tokenizer, o.prompt, policy, kv_fill=o.kv_fill, decoding=strategy,
                                        max_new_tokens=o.max_new_tokens, seed=o.seed)
        return {"mode": "early_exit", "texts": texts, "stats": result.stats(), "num_layers": stack.num_layers}
    ids = encode_prompts(tokenizer, o.prompt)
    if o.speculative:
        from layerwise.inference.speculative import speculative_text

        exit_layer = max(1, stack.num_layers // 2) if o.exit_layer is None else o.exit_layer
        if not 1 <= exit_layer < stack.num_layers:  # the rest is checked by speculative_generate, before any work
            raise LayerwiseError(f"`exit_layer` {exit_layer}: draft with layers 1..E, E in 1..{stack.num_layers - 1}")
        stack.model.to(dev)
        texts, stats = speculative_text(stack, tokenizer, o.prompt, exit_layer, o.num_draft, decoding=strategy,
                                        max_new_tokens=o.max_new_tokens, seed=o.seed, draft_vocab=vocab)
        return {"mode": "speculative", "texts": texts, "stats": stats, "exit_layer": exit_layer}
    layers = parse_layers(o.layer, stack.num_layers)
    for k in layers:
        check_generation(stack, k, ids, o.max_new_tokens)
    stack.model.to(dev)
    from layerwise.stack import make_lens

    lens = make_lens(o.lens, stack)
    return {"mode": "layers", "layers": {k: generate_text(stack, tokenizer, o.prompt, k, decoding=strategy,
                                                           max_new_tokens=o.max_new_tokens, seed=o.seed,
                                                           use_cache=o.cache, lens=lens) for k in layers}}


def _sweep(bundle, o: GenerateOptions, thresholds: list[float], strategy, device, policy_options: dict) -> dict:
    """The early-exit sweep on the prompts of ``prompt`` or of the corpus ``data``; written to ``out``."""
    from layerwise.evaluation.generation_metrics import Embedder
    from layerwise.evaluation.prompts import GenEvalSettings, check_corpus, model_prompts, select_offsets
    from layerwise.inference.generation import encode_prompts, special_ids
    from layerwise.report.writers import write_token_exit

    tok = bundle.inputs.tokenizer
    if o.data is not None:
        from layerwise.data import load_dataset

        ds = load_dataset(o.data, split=o.split)
        check_corpus(ds, o.num_prompts)
        settings = GenEvalSettings(num_prompts=o.num_prompts, prefix_len=o.prefix_len, max_new_tokens=o.max_new_tokens)
        prompts = model_prompts(tok, ds.text or "", select_offsets(ds.text or "", [tok], settings), settings)
        ids, texts = prompts.prefix_ids, prompts.prefix_texts
    else:
        ids, texts = encode_prompts(tok, o.prompt), list(o.prompt)
    scorer = Embedder(o.embedder, device=str(device))
    eos, pad = special_ids(bundle.stack, tok)
    results = sweep_token_exit(bundle.stack, ids, thresholds, policy=o.policy, policy_options=policy_options,
                               min_layer=o.min_layer,
                               max_layer=o.max_layer, kv_fill=o.kv_fill, decoding=strategy,
                               max_new_tokens=o.max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                               batch_size=o.batch_size, repeats=o.repeats, seed=o.seed, tokenizer=tok,
                               embedder=scorer, prefix_texts=texts)
    results.update(model=o.model, data=o.data, split=o.split if o.data else None, embedder=scorer.describe())
    write_token_exit([results], Path(o.out))
    return results


def _batches(prompts: Sequence[Sequence[int]], size: int) -> list[list[list[int]]]:
    return [[list(p) for p in prompts[i:i + size]] for i in range(0, len(prompts), size)]


def sweep_token_exit(stack: LayerStack, prompts: Sequence[Sequence[int]], thresholds: Sequence[float], *,
                     policy: str = "confidence", policy_options: dict | None = None, min_layer: int = 1,
                     max_layer: int | None = None, kv_fill: str = "propagate", decoding=None, max_new_tokens: int = 32,
                     eos_token_id: int | None = None, pad_token_id: int = 0, batch_size: int = 8, repeats: int = 1,
                     seed: int = 0, tokenizer: Any = None, embedder: Any = None,
                     prefix_texts: Sequence[str] | None = None) -> dict:
    """Full decoding and early exit at every threshold on the same prompts (batches of ``batch_size``, batch i
    seeded with seed + i); timed interleaved (``repeats`` after a warm-up); quality scored afterwards.
    Coherence and diversity need ``tokenizer`` and ``embedder`` (with ``prefix_texts``), else they are left out.
    ``policy_options``: keyword options of ``make_policy`` (``check_every``, ``classifier``).

    Per setting: tokens/s and the speedup over full decoding, mean exit layer, its histogram and the theoretical
    block speedup L / mean exit layer, the perplexity of the continuations under the full model
    (``continuation_nll``), and their coherence and diversity (``score_texts``)."""
    from tqdm.auto import tqdm

    from layerwise.evaluation.generation_metrics import continuation_nll, score_texts
    from layerwise.inference.decoding import Greedy
    from layerwise.inference.generation import generate
    from layerwise.inference.policies import make_policy
    from layerwise.inference.timing import interleaved
    from layerwise.inference.token_exit import TokenExitResult, check_token_exit, token_exit_generate

    decoding = decoding or Greedy()
    policies = {t: make_policy(policy, t, min_layer, max_layer, **(policy_options or {})) for t in thresholds}
    for p in policies.values():  # every setting refused before any generation
        check_token_exit(stack, p, kv_fill, decoding)
    batches = _batches(prompts, batch_size)
    common = {"max_new_tokens": max_new_tokens, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    outputs: dict[str, list] = {}
    runs = {"full": None, **{f"{t:g}": t for t in thresholds}}
    bar = tqdm(total=len(runs) * (repeats + 1), desc="early-exit sweep", unit="run", leave=False)

    def runner(key: str, t: float | None):
        def run():
            if t is None:
                outputs[key] = [generate(stack, b, decoding=decoding, seed=seed + i, **common)
                                for i, b in enumerate(batches)]
            else:
                outputs[key] = [token_exit_generate(stack, b, policies[t], kv_fill=kv_fill, decoding=decoding,
                                                    seed=seed + i, **common) for i, b in enumerate(batches)]
            bar.update(1)
        return run

    seconds = interleaved({k: runner(k, t) for k, t in runs.items()}, repeats)
    bar.close()
    rows = []
    for key, t in runs.items():
        results = outputs[key]
        generated = [r.generated if isinstance(r, TokenExitResult) else r for r in results]
        ids = [row for g in generated for row in g.rows()]
        tokens = sum(len(r) for r in ids)
        nll, count = continuation_nll(stack, prompts, ids, pad_token_id, batch_size)
        row = {"threshold": t, "seconds": seconds[key], "tokens": tokens, "tokens_per_s": tokens / seconds[key],
               "perplexity": math.exp(nll / count) if count else float("nan")}
        if t is None:
            row.update(mean_exit_layer=float(stack.num_layers), layer_speedup=1.0, compute_speedup=1.0)
        else:
            stats = _merged_stats(results)
            row.update({k: stats[k] for k in ("mean_exit_layer", "exit_histogram", "layer_speedup",
                                              "batch_layer_speedup", "compute_speedup")})
        if tokenizer is not None and embedder is not None and prefix_texts is not None:
            texts = [tokenizer.decode(r, skip_special_tokens=True) for r in ids]
            row.update(score_texts(embedder, prefix_texts, texts, ids))
            row["sample"] = texts[0]
        rows.append(row)
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base
    return {"policy": policy, "min_layer": min_layer, "max_layer": max_layer or stack.num_layers, "kv_fill": kv_fill,
            "kv_hook": stack.has_kv_hook, "num_layers": stack.num_layers, "decoding": decoding.name,
            "prompts": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new_tokens, "repeats": repeats,
            "full": rows[0], "sweep": rows[1:]}


def _merged_stats(results: Sequence[TokenExitResult]) -> dict:
    """``TokenExitResult.stats`` over several batches."""
    import torch

    merged = replace(results[0], exit_layers=torch.cat([r.exit_layers.flatten() for r in results]),
                     full_layers=[d for r in results for d in r.full_layers])
    return merged.stats()
