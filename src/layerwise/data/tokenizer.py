"""A byte-level tokenizer with a Hugging Face-like call, for the project's own and tiny models."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError


class ByteTokenizer:
    """Byte-level tokenizer (ids 0-255 are UTF-8 bytes, 256 is padding) with a HF-like call."""

    vocab_size = 257
    pad_token_id = 256

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """UTF-8 bytes of ``text``; there are no special tokens (the flag exists for HF parity)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Tensor | list[int], skip_special_tokens: bool = True) -> str:
        """Bytes back to text; padding is dropped and broken UTF-8 is replaced, not raised."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return bytes(i for i in values if i < 256).decode("utf-8", errors="replace")

    def __call__(
        self,
        texts: str | list[str],
        text_pair: str | list[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Tokenise like a HF tokenizer: right padding, ``input_ids`` and ``attention_mask``. A ``text_pair``
        is appended after a NUL byte, with ``token_type_ids`` 0 for the first text and 1 for the second;
        truncation then trims the longer of the two first, one byte at a time (``longest_first``)."""
        single = isinstance(texts, str)
        firsts = [self.encode(t) for t in ([texts] if single else texts)]
        seconds = None if text_pair is None else [self.encode(t) for t in ([text_pair] if single else text_pair)]
        if seconds is None:
            rows, types = firsts, [[0] * len(r) for r in firsts]
            if truncation and max_length is not None:
                rows, types = [r[:max_length] for r in rows], [t[:max_length] for t in types]
        else:
            if truncation and max_length is not None:
                pairs = [_longest_first(a, b, max_length - 1) for a, b in zip(firsts, seconds)]
            else:
                pairs = list(zip(firsts, seconds))
            rows = [a + [0] + b for a, b in pairs]
            types = [[0] * (len(a) + 1) + [1] * len(b) for a, b in pairs]
        width = _pad_width(rows, padding, max_length)
        masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        ids = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
        types = [t + [0] * (width - len(t)) for t in types]
        out = {"input_ids": ids, "attention_mask": masks}
        if seconds is not None:
            out["token_type_ids"] = types
        if return_tensors == "pt":
            if len({len(r) for r in ids}) > 1:
                raise LayerwiseError("texts have different lengths: pass padding=True to get tensors")
            return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        if return_tensors is not None:
            raise LayerwiseError(f"return_tensors={return_tensors!r} is not supported: use 'pt' or None")
        return {k: v[0] for k, v in out.items()} if single else out


def _longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Trim the longer of the two (the first on a tie) one token at a time until both fit in ``budget``."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max(budget, 0):
        if len(a) >= len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def _pad_width(rows: list[list[int]], padding: bool | str, max_length: int | None) -> int:
    """Target length per HF semantics: longest in batch, max_length, or none (0 pads nothing)."""
    if padding in (True, "longest"):
        return max((len(r) for r in rows), default=0)
    if padding == "max_length":
        if max_length is None:
            raise LayerwiseError("padding='max_length' needs max_length")
        return max_length
    if padding in (False, "do_not_pad"):
        return 0
    raise LayerwiseError(f"unknown padding {padding!r}: use True, 'longest', 'max_length' or False")


END_OF_TEXT = "<|endoftext|>"


def train_bpe(texts: list[str], vocab_size: int, *, min_frequency: int = 2) -> Any:
    """A byte-level BPE (GPT-2's scheme) trained on ``texts`` with Hugging Face ``tokenizers``.

    Returned as a ``transformers.PreTrainedTokenizerFast`` whose end-of-text token also serves as BOS,
    EOS and padding (as GPT-2), so ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise LayerwiseError(f"a byte-level BPE needs a vocabulary of at least {len(alphabet) + 1} (256 bytes and "
                             f"the end-of-text token), not {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, model_max_length=10**9)
