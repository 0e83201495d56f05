"""Generation evaluation (the AlignedGPT paper's Figure 8): per model and per layer ℓ, the next-token accuracy
and perplexity of readout(hˡ) on a corpus split, and the coherence and diversity of text generated from layer
ℓ after prompts taken from that corpus, beside the same two scores of the corpus's own continuation (a ceiling).

Prompts: the corpus's text boundaries (the first line of each paragraph, headings excluded) are shuffled with
a seed; the first ``num_prompts`` that leave room for prefix + continuation tokens under every model's
tokenizer are kept, so all models start from the same places. Each model tokenises them itself: its prefix is
the first ``prefix_len`` tokens, its reference continuation the next ``max_new_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset, make_loader
from layerwise.data.corpora import encode_text
from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation_metrics import Embedder, all_diversities, coherence_values, nan_mean
from layerwise.evaluation.per_layer import evaluate_layers
from layerwise.inference.decoding import ContrastiveSearch, Greedy, Sampling
from layerwise.inference.generation import check_generation, generate

_HEADING = re.compile(r"^\s*=.*=\s*$")  # WikiText's " = Title = " lines


@dataclass(frozen=True)
class GenEvalSettings:
    """How prompts are taken, generated and scored (checked by the caller's flag schema)."""

    num_prompts: int = 100
    prefix_len: int = 32
    max_new_tokens: int = 128
    batch_size: int = 16
    seq_len: int | None = None  # LM scoring blocks; None: min(128, the model's context)
    eval_batch_size: int = 16
    layer_zero: bool = False
    diversity: str = "words"
    seed: int = 0
    samples: int = 3


@dataclass
class Prompts:
    """One model's prompts: token ids of the prefixes and of the reference continuations, and their texts."""

    prefix_ids: list[list[int]]
    reference_ids: list[list[int]]
    prefix_texts: list[str]
    reference_texts: list[str]


def text_boundaries(text: str) -> list[int]:
    """Character offsets where a paragraph starts: a non-blank, non-heading line at the start of the text or
    after a blank line."""
    offsets, previous_blank, position = [], True, 0
    for line in text.splitlines(keepends=True):
        blank = not line.strip()
        if previous_blank and not blank and not _HEADING.match(line):
            offsets.append(position + len(line) - len(line.lstrip()))
        previous_blank, position = blank, position + len(line)
    return offsets


def tokens_at(tokenizer: Any, text: str, offset: int, need: int) -> list[int]:
    """The first ``need`` token ids of ``text[offset:]`` (fewer only where the text ends first); the text is
    tokenised in growing chunks, not whole."""
    chunk = 8 * need
    while True:
        piece = text[offset:offset + chunk]
        ids = encode_text(tokenizer, piece)
        # The last token of a cut chunk may be cut too: accept only when a token beyond ``need`` exists.
        if len(ids) > need or offset + chunk >= len(text):
            return ids[:need]
        chunk *= 2


def select_offsets(text: str, tokenizers: Sequence[Any], settings: GenEvalSettings) -> list[int]:
    """``num_prompts`` paragraph starts, in a seeded random order, that leave room for prefix + continuation
    under every tokenizer; in text order."""
    need = settings.prefix_len + settings.max_new_tokens
    candidates = text_boundaries(text)
    check_prompt_count(len(candidates), settings.num_prompts)
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    chosen = []
    for i in order:
        if all(len(tokens_at(tok, text, candidates[i], need)) == need for tok in tokenizers):
            chosen.append(candidates[i])
            if len(chosen) == settings.num_prompts:
                return sorted(chosen)
    raise LayerwiseError(f"only {len(chosen)} paragraph starts leave room for {need} tokens (prefix + continuation) "
                         f"but {settings.num_prompts} prompts were asked: ask for fewer or shorter prompts")


def check_corpus(ds: LayerwiseDataset, num_prompts: int) -> None:
    """A text corpus with at least ``num_prompts`` paragraph starts (checked before anything loads)."""
    if ds.kind != "corpus":
        raise LayerwiseError(f"{ds.name} is {ds.kind} data: generation is scored on a text corpus "
                             "(wikitext2, tinyshakespeare or a .txt file)")
    check_prompt_count(len(text_boundaries(ds.text or "")), num_prompts)


def check_prompt_count(boundaries: int, wanted: int) -> None:
    """More prompts than the corpus has paragraph starts is refused."""
    if wanted > boundaries:
        raise LayerwiseError(f"{wanted} prompts asked but the corpus has only {boundaries} paragraph starts: "
                             "ask for fewer prompts or use a larger corpus")


def model_prompts(tokenizer: Any, text: str, offsets: Sequence[int], settings: GenEvalSettings) -> Prompts:
    """This model's prefix and reference token ids (and texts) at the chosen offsets."""
    p, need = settings.prefix_len, settings.prefix_len + settings.max_new_tokens
    rows = [tokens_at(tokenizer, text, o, need) for o in offsets]
    prefix, reference = [r[:p] for r in rows], [r[p:] for r in rows]
    return Prompts(prefix, reference, [_decode(tokenizer, r) for r in prefix], [_decode(tokenizer, r) for r in reference])


def check_model(bundle: ModelBundle, settings: GenEvalSettings) -> int:
    """A language model with a tokenizer whose context holds prefix + continuation and the scoring blocks;
    returns the scoring block length."""
    stack = bundle.stack
    check_generation(stack, stack.num_layers, [[0] * settings.prefix_len], settings.max_new_tokens)
    if bundle.inputs.tokenizer is None:
        raise LayerwiseError(f"{bundle.name} has no tokenizer: save one beside the model to generate text")
    context = stack.context_length
    seq_len = settings.seq_len or min(128, context or 128)
    if context is not None and seq_len > context:
        raise LayerwiseError(f"scoring blocks of {seq_len} tokens exceed {bundle.name}'s context of {context}: "
                             "use shorter blocks")
    return seq_len


def generate_layer(bundle: ModelBundle, prompts: Prompts, layer: int, decoding: Greedy | Sampling | ContrastiveSearch,
                   settings: GenEvalSettings, bar: tqdm | None = None) -> list[list[int]]:
    """Continuations (token ids, up to and including EOS) of every prompt from ``layer``, in batches; batch i is
    sampled with seed + i, so a run is reproducible whatever else runs."""
    tok = bundle.inputs.tokenizer
    eos, pad = getattr(tok, "eos_token_id", None), getattr(tok, "pad_token_id", None)
    out: list[list[int]] = []
    for i in range(0, len(prompts.prefix_ids), settings.batch_size):
        batch = prompts.prefix_ids[i:i + settings.batch_size]
        generated = generate(bundle.stack, batch, layer, decoding=decoding, max_new_tokens=settings.max_new_tokens,
                             eos_token_id=eos, pad_token_id=pad if pad is not None else 0,
                             seed=settings.seed + i // settings.batch_size)
        out.extend(generated.rows())
        if bar is not None:
            bar.update(len(batch))
    return out


def score_texts(embedder: Embedder, prefixes: Sequence[str], texts: Sequence[str],
                ids: Sequence[Sequence[int]]) -> dict:
    """Coherence (mean cos(e(prefix), e(continuation))) and the diversity of every convention."""
    return {"coherence": nan_mean(coherence_values(embedder, prefixes, texts)),
            "diversity": all_diversities(texts, ids)}


def lm_scores(bundle: ModelBundle, ds: LayerwiseDataset, seq_len: int, batch_size: int,
              device: torch.device) -> dict[str, list[float]]:
    """Per-layer next-token accuracy and perplexity of readout(hˡ), ℓ = 0..L, on the corpus cut into blocks of
    ``seq_len`` (``evaluation.per_layer.evaluate_layers``)."""
    loader = make_loader(ds, bundle.inputs, batch_size, seq_len=seq_len)
    bar = tqdm(loader, desc=f"scoring {bundle.name}", unit="batch", leave=False)
    return evaluate_layers(bundle.stack, bar, device=device)


def evaluate_model(bundle: ModelBundle, ds: LayerwiseDataset, offsets: Sequence[int], embedder: Embedder,
                   decoding, settings: GenEvalSettings, device: torch.device, bar: tqdm | None = None) -> dict:
    """One model's Figure-8 numbers per layer, its reference scores, and sample continuations."""
    seq_len = check_model(bundle, settings)
    tok = bundle.inputs.tokenizer
    prompts = model_prompts(tok, ds.text or "", offsets, settings)
    layers = list(range(0 if settings.layer_zero else 1, bundle.stack.num_layers + 1))
    lm = lm_scores(bundle, ds, seq_len, settings.eval_batch_size, device)
    reference = score_texts(embedder, prompts.prefix_texts, prompts.reference_texts, prompts.reference_ids)
    per_layer, samples = [], {}
    for layer in layers:
        rows = generate_layer(bundle, prompts, layer, decoding, settings, bar)
        texts = [_decode(tok, r) for r in rows]
        per_layer.append(score_texts(embedder, prompts.prefix_texts, texts, rows))
        samples[layer] = texts[: settings.samples]
    conventions = reference["diversity"].keys()
    return {
        "model": bundle.name, "layers": layers, "num_layers": bundle.stack.num_layers,
        "accuracy": [lm["accuracy"][ell] for ell in layers], "perplexity": [lm["perplexity"][ell] for ell in layers],
        "coherence": [s["coherence"] for s in per_layer],
        "diversity": [s["diversity"][settings.diversity] for s in per_layer],
        "diversity_by_convention": {c: [s["diversity"][c] for s in per_layer] for c in conventions},
        "reference": {"coherence": reference["coherence"], "diversity": reference["diversity"][settings.diversity],
                      "diversity_by_convention": reference["diversity"]},
        "lm_eval": {"seq_len": seq_len, "blocks_limit": ds.limit},
        "samples": {"prefix": prompts.prefix_texts[: settings.samples],
                    "reference": prompts.reference_texts[: settings.samples],
                    "layers": {str(k): v for k, v in samples.items()}},
    }


def evaluate_generation(bundles: Sequence[ModelBundle], ds: LayerwiseDataset, embedder: Embedder, decoding,
                        settings: GenEvalSettings, device: torch.device) -> dict:
    """Every model checked and every prompt chosen before any generation; then each model in turn."""
    check_corpus(ds, settings.num_prompts)
    for bundle in bundles:
        check_model(bundle, settings)
    offsets = select_offsets(ds.text or "", [b.inputs.tokenizer for b in bundles], settings)
    total = sum(b.stack.num_layers + settings.layer_zero for b in bundles) * len(offsets)
    with tqdm(total=total, desc="generating", unit="prompt", leave=False) as bar:
        models = [evaluate_model(b, ds, offsets, embedder, decoding, settings, device, bar) for b in bundles]
    return {"models": models, "prompt_offsets": list(offsets), "embedder": embedder.describe(),
            "diversity_convention": settings.diversity}


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)
