"""A reduced-vocabulary draft head for self-speculative decoding: the LM head's rows of the V′ most frequent tokens
of the training corpus,

    draft logits z′ = W[S] · norm(hᴱ) (+ b[S]),   S = the V′ most frequent token ids,

so a drafted token costs V′·D multiply-adds of head instead of V·D. The corpus's token counts are stored beside
the model (``token_counts.safetensors``: ``counts`` (V,); ``token_counts.json``: corpus and tokens counted) and
V′ is chosen at decoding time (``draft_vocabulary``). Verification keeps the full head: see
``inference.speculative`` for why the output distribution does not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.report.serialize import load_beside_model, save_beside_model

COUNTS, META = "token_counts.safetensors", "token_counts.json"
FILES = (COUNTS, META)  # the run-folder patterns of a command that saves or copies counts


def token_counts(ids: Iterable[Tensor | list[int]], vocab_size: int) -> Tensor:
    """(V,) int64: how often each token id occurs in ``ids`` (token-id sequences of a corpus)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for seq in ids:
        seq = torch.as_tensor(seq, dtype=torch.long).flatten()
        if seq.numel() and (int(seq.min()) < 0 or int(seq.max()) >= vocab_size):
            raise LayerwiseError(f"a token id outside 0..{vocab_size - 1}: count with the model's own tokenizer")
        counts += torch.bincount(seq, minlength=vocab_size)
    return counts


def draft_vocabulary(counts: Tensor, size: int) -> Tensor:
    """The ``size`` most frequent token ids (V′ = ``draft_vocab``), ascending; ties go to the lower id."""
    if not 1 <= size <= counts.numel():
        raise LayerwiseError(f"`draft_vocab` {size}: pass a number of tokens in 1..{counts.numel()}",
                             option="draft_vocab")
    order = torch.sort(counts, descending=True, stable=True).indices
    return order[:size].sort().values


def save_token_counts(folder: str | Path, counts: Tensor, corpus: str = "", overwrite: bool = False) -> list[Path]:
    """Write the counts beside a model (atomically); refuses to replace them unless ``overwrite``."""
    meta = {"corpus": corpus, "tokens": int(counts.sum()), "vocab_size": counts.numel()}
    return save_beside_model(Path(folder), (COUNTS, {"counts": counts.long()}), (META, meta), "token counts",
                             overwrite)


def copy_token_counts(source: str | Path, folder: str | Path) -> list[Path]:
    """Copy the counts saved beside the model in ``source`` (when it has them) to ``folder``, the folder of a
    model trained from it: the same tokenizer, so the same token ids. Returns the files written."""
    import shutil

    source, folder = Path(source), Path(folder)
    if not (source / COUNTS).is_file() or source.resolve() == folder.resolve():
        return []
    return [Path(shutil.copyfile(source / name, folder / name)) for name in FILES if (source / name).is_file()]


def load_token_counts(folder: str | Path) -> Tensor:
    """The (V,) counts saved beside a model (``save_token_counts``)."""
    path = Path(folder) / COUNTS
    if not path.is_file():
        raise LayerwiseError(f"{folder} holds no {COUNTS}: count the training corpus with token_counts and "
                             "save_token_counts first")
    return load_beside_model(path, ("counts",))["counts"]


class DraftHead(nn.Module):
    """norm(h) → the head's rows ``vocab`` only: logits over the draft vocabulary, (…, V′)."""

    def __init__(self, readout: nn.Module, vocab: Tensor):
        super().__init__()
        head = getattr(readout, "head", None)
        if not isinstance(head, nn.Linear) or getattr(readout, "pooling", None) != "none":
            raise LayerwiseError("a reduced-vocabulary draft head needs a per-token readout ending in a linear LM head")
        if vocab.numel() == 0 or int(vocab.max()) >= head.out_features or int(vocab.min()) < 0:
            raise LayerwiseError(f"`draft_vocab` ids must lie in 0..{head.out_features - 1}", option="draft_vocab")
        self.norm, self.vocab = readout.without_head(), vocab.to(head.weight.device)
        self.weight = head.weight.detach()[self.vocab].contiguous()
        self.bias = None if head.bias is None else head.bias.detach()[self.vocab].contiguous()

    def forward(self, h: Tensor) -> Tensor:
        return nn.functional.linear(self.norm(h), self.weight, self.bias)


__all__ = ["DraftHead", "draft_vocabulary", "load_token_counts", "save_token_counts", "token_counts"]
