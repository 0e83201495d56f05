"""Prompts from a text corpus, as generation is scored (the AlignedGPT paper's Figure 8): the corpus's text
boundaries (the first line of each paragraph, headings excluded) are shuffled with a seed; the first
``num_prompts`` that leave room for prefix + continuation tokens under every model's tokenizer are kept, so all
models start from the same places. Each model tokenises them itself: its prefix is the first ``prefix_len``
tokens, its reference continuation the next ``max_new_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from layerwise.data import LayerwiseDataset
from layerwise.data.corpora import encode_text
from layerwise.errors import LayerwiseError

_HEADING = re.compile(r"^\s*=.*=\s*$")  # WikiText's " = Title = " lines


@dataclass(frozen=True)
class GenEvalSettings:
    """How prompts are taken, generated and scored (checked by the caller's options)."""

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
    return Prompts(prefix, reference, [decode(tokenizer, r) for r in prefix], [decode(tokenizer, r) for r in reference])


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text of token ``ids``, special tokens (EOS, padding) left out."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)
