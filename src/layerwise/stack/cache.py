"""``KVCache``: keys and values per block for the project's own decoders, with Hugging Face's cache API.

It answers the calls the generation code makes of ``transformers.DynamicCache`` (``update``,
``get_seq_length``, ``crop``, ``batch_select_indices``, ``batch_repeat_interleave``), so one generation loop
drives both. Layers never written (blocks beyond the exit layer) simply stay empty.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """keys[ℓ], values[ℓ]: (B, heads, S, head_dim) for every block ℓ that has run."""

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def update(self, key: Tensor, value: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        """Append the new positions' keys and values to block ``layer_idx``'s; return all of them."""
        if layer_idx in self.keys:
            key = torch.cat([self.keys[layer_idx], key], dim=-2)
            value = torch.cat([self.values[layer_idx], value], dim=-2)
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions cached in block ``layer_idx`` (0 when it has none)."""
        return self.keys[layer_idx].shape[-2] if layer_idx in self.keys else 0

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` positions of every block; a negative value drops that many from the
        end instead (the only form Hugging Face's caches accept now)."""
        for store in (self.keys, self.values):
            for i in store:
                store[i] = store[i][..., :max_length, :] if max_length >= 0 else store[i][..., :store[i].shape[-2] + max_length, :]

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the given batch rows, in that order."""
        for store in (self.keys, self.values):
            for i in store:
                store[i] = store[i][indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each batch row ``repeats`` times in a row (row b becomes rows b·repeats … b·repeats + repeats − 1)."""
        for store in (self.keys, self.values):
            for i in store:
                store[i] = store[i].repeat_interleave(repeats, dim=0)
