"""Per-token early exit over a threshold sweep: the quality cost against the speedup.

For every threshold τ (and the full model, τ = None) the same prompts are continued; reported per setting:
- tokens/s and the measured speedup over full decoding (the settings timed interleaved, ``inference.timing``);
- mean exit layer, its histogram and the theoretical block speedup L / mean exit layer;
- the perplexity of the generated continuations under the full model, exp(Σ −log p_L(xₜ | prompt, x_<t) / n),
  over all generated tokens (``continuation_nll``);
- coherence and diversity of the continuations (``gen_eval.score_texts``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from layerwise.inference.decoding import Greedy, Sampling
from layerwise.inference.generation import generate, left_pad, positions
from layerwise.inference.policies import make_policy
from layerwise.inference.timing import interleaved
from layerwise.inference.token_exit import TokenExitResult, check_token_exit, token_exit_generate
from layerwise.stack import LayerStack


@torch.no_grad()
def continuation_nll(stack: LayerStack, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                     pad_token_id: int = 0, batch_size: int = 16) -> tuple[float, int]:
    """(Σ −log p_L(xₜ | prompt, x_<t) over every continuation token, their count) under the full model, one
    uncached forward of each left-padded prompt + continuation."""
    total, count = 0.0, 0
    for i in range(0, len(prompts), batch_size):
        rows = [(list(p), list(c)) for p, c in zip(prompts[i:i + batch_size], continuations[i:i + batch_size]) if c]
        if not rows:
            continue
        ids, mask = left_pad([p + c for p, c in rows], pad_token_id, next(stack.model.parameters()).device)
        logits = stack({"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)})
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half precision scored in float32
        targets = torch.full_like(ids, -100)
        for r, (_, c) in enumerate(rows):
            targets[r, ids.shape[1] - len(c):] = ids[r, ids.shape[1] - len(c):]
        total += float(F.cross_entropy(logits[:, :-1].transpose(1, 2), targets[:, 1:], reduction="sum"))
        count += sum(len(c) for _, c in rows)
    return total, count


def _batches(prompts: Sequence[Sequence[int]], size: int) -> list[list[list[int]]]:
    return [[list(p) for p in prompts[i:i + size]] for i in range(0, len(prompts), size)]


def sweep_token_exit(stack: LayerStack, prompts: Sequence[Sequence[int]], thresholds: Sequence[float], *,
                     policy: str = "confidence", policy_options: dict | None = None, min_layer: int = 1,
                     max_layer: int | None = None,
                     kv_fill: str = "propagate", decoding: Greedy | Sampling | None = None, max_new_tokens: int = 32,
                     eos_token_id: int | None = None, pad_token_id: int = 0, batch_size: int = 8, repeats: int = 1,
                     seed: int = 0, tokenizer: Any = None, embedder: Any = None,
                     prefix_texts: Sequence[str] | None = None) -> dict:
    """Full decoding and early exit at every threshold on the same prompts (batches of ``batch_size``, batch i
    seeded with seed + i); timed interleaved (``repeats`` after a warm-up); quality scored afterwards.
    Coherence and diversity need ``tokenizer`` and ``embedder`` (with ``prefix_texts``), else they are left out.
    ``policy_options``: keyword options of ``make_policy`` (``check_every``, ``classifier``)."""
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
            from layerwise.evaluation.gen_eval import score_texts

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
    merged = replace(results[0], exit_layers=torch.cat([r.exit_layers.flatten() for r in results]),
                     full_layers=[d for r in results for d in r.full_layers])
    return merged.stats()
