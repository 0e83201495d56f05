"""Plain-text corpora for language models, and their cut into token blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from layerwise.data.dataset import LayerwiseDataset
from layerwise.data.locate import find_data
from layerwise.data.tokenizer import ByteTokenizer
from layerwise.errors import LayerwiseError
from layerwise.files import read_text


def load_tinyshakespeare(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    text = read_text(find_data("tinyshakespeare/input.txt", data_dir), "corpus")
    cut = int(len(text) * 0.9)  # the usual 90/10 character split (as in nanoGPT)
    if split == "train":
        return LayerwiseDataset("tinyshakespeare", "corpus", text=text[:cut])
    if split in ("test", "valid", "validation", "dev"):
        return LayerwiseDataset("tinyshakespeare", "corpus", text=text[cut:])
    raise LayerwiseError(f"unknown split {split!r} for tinyshakespeare: use train or test")


def load_wikitext2(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    if split == "train":
        raise LayerwiseError("wikitext2 has no train split here: train on split 'valid' or on tinyshakespeare")
    files = {"valid": "valid.txt", "validation": "valid.txt", "dev": "valid.txt", "test": "test.txt"}
    if split not in files:
        raise LayerwiseError(f"unknown split {split!r} for wikitext2: use valid or test")
    text = read_text(find_data(f"wikitext-2/{files[split]}", data_dir), "corpus")
    return LayerwiseDataset("wikitext2", "corpus", text=text)


def corpus_blocks(ds: LayerwiseDataset, tokenizer: Any, seq_len: int) -> Tensor:
    """Tokenise the whole corpus once and cut it into non-overlapping (N, seq_len) blocks.

    The trailing partial block is dropped. With ``ds.limit`` set, ``limit`` blocks are picked by a
    seeded shuffle and kept in text order.
    """
    if seq_len <= 0:
        raise LayerwiseError(f"`seq_len` {seq_len}: pass a positive number of tokens", option="seq_len")
    ids = torch.tensor(encode_text(tokenizer, ds.text or ""), dtype=torch.long)
    n = len(ids) // seq_len
    if n == 0:
        raise LayerwiseError(f"{ds.name} has {len(ids)} tokens, fewer than `seq_len` {seq_len}: lower `seq_len` or use "
                             "more text", option="seq_len")
    blocks = ids[: n * seq_len].view(n, seq_len)
    if ds.limit is not None:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(ds.seed))[: ds.limit]
        blocks = blocks[keep.sort().values]
    return blocks


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens, by the byte tokenizer or a HF tokenizer."""
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text)
    # verbose=False: a HF tokenizer otherwise warns that the text exceeds the model's max length.
    return tokenizer.encode(text, add_special_tokens=False, verbose=False)
