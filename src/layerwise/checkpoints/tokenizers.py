"""A model folder's tokenizer, checked against the model at load: the files it is read from, their shape, and a
vocabulary that fits the embedding (every id a tokenizer can give, special tokens included, must have a row).

A folder without tokenizer files (a plain ``save_pretrained`` of a model built from a config) gets the byte
tokenizer when its embedding has the 257 rows it needs, whatever transformers would return for it (for GPT-2,
a tokenizer with no vocabulary, which turns every prompt into no tokens at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from layerwise.checkpoints.schemas import TokenizerFile
from layerwise.data.tokenizer import ByteTokenizer
from layerwise.errors import LayerwiseError
from layerwise.files import check_regular, read_json

# Any of these makes a folder's tokenizer its own (AutoTokenizer reads them); none: the byte tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
                   "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


def has_tokenizer_files(path: Path) -> bool:
    return any((path / name).exists() for name in TOKENIZER_FILES)


def folder_tokenizer(path: Path) -> Any:
    """The tokenizer saved in ``path`` (its ``tokenizer.json`` checked for shape first), or the byte tokenizer
    when the folder has no tokenizer files; files that transformers cannot read, or that hold no vocabulary,
    are one LayerwiseError line."""
    if not has_tokenizer_files(path):
        return ByteTokenizer()
    for name in TOKENIZER_FILES:  # transformers reads them unchecked: each a regular file of bounded size
        if (path / name).exists() or (path / name).is_symlink():
            check_regular(path / name, "tokenizer")
    if (path / "tokenizer.json").exists() or (path / "tokenizer.json").is_symlink():
        read_json(path / "tokenizer.json", TokenizerFile, kind="tokenizer")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # transformers and tokenizers raise many types (even plain Exception) on bad files
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise LayerwiseError(f"the tokenizer files in {path} cannot be read ({detail}): re-save the tokenizer "
                             "with the model") from None
    if not getattr(tokenizer, "vocab_size", 0):
        present = ", ".join(n for n in TOKENIZER_FILES if (path / n).exists())
        raise LayerwiseError(f"the tokenizer files in {path} ({present}) hold no vocabulary: add its vocabulary "
                             "files (tokenizer.json, or vocab.json and merges.txt), or remove them all to use the "
                             "byte tokenizer")
    return tokenizer


def embedding_rows(model: nn.Module) -> int | None:
    """How many token ids ``model``'s input embedding has rows for (None: the model takes no token ids)."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        embedding = get() if callable(get) else getattr(model, "tok", None)
    except NotImplementedError:
        return None
    return embedding.num_embeddings if isinstance(embedding, nn.Embedding) else None


def check_fits(tokenizer: Any, model: nn.Module, path: Path) -> None:
    """Refuse a tokenizer that can give ids the embedding has no row for (len(tokenizer) > rows)."""
    rows = embedding_rows(model)
    if tokenizer is None or rows is None:
        return
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.vocab_size
    if size <= rows:
        return
    if isinstance(tokenizer, ByteTokenizer) and not has_tokenizer_files(path):
        raise LayerwiseError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, …) and its embedding "
                             f"has {rows} rows, fewer than the {size} the byte tokenizer needs: save the model's "
                             "tokenizer beside it (tokenizer.save_pretrained)")
    raise LayerwiseError(f"the tokenizer of {path} has {size} tokens but the model's embedding has {rows} rows: "
                         "save the tokenizer the model was trained with beside it")
