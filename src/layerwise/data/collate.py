"""``make_loader``: examples to batches of the model's input keys plus ``labels``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from layerwise.data.augment import Augmenter
from layerwise.data.corpora import corpus_blocks
from layerwise.data.dataset import LayerwiseDataset
from layerwise.data.spec import InputSpec
from layerwise.errors import LayerwiseError

_COMPATIBLE: dict[str, tuple[str, ...]] = {"image": ("image", "vector"), "text": ("text",), "corpus": ("tokens",)}


def prepare_images(images: Tensor, spec: InputSpec) -> Tensor:
    """Resize, repeat grey to RGB, and normalise a float batch (B,C,H,W) in [0,1] for ``spec``."""
    if spec.image_size is not None and images.shape[-2:] != (spec.image_size, spec.image_size):
        size = (spec.image_size, spec.image_size)
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    if spec.channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=images.dtype).view(1, -1, 1, 1)
        images = (images - mean) / std
    return images


class _ImageCollate:
    def __init__(self, spec: InputSpec, augmenter: Augmenter | None) -> None:
        self.spec = spec
        self.augmenter = augmenter

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        images = torch.stack([item["image"] for item in items])
        if self.augmenter is not None:
            images = self.augmenter(images)
        images = prepare_images(images, self.spec)
        labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
        if self.spec.modality == "vector":
            return {"inputs": images.flatten(1), "labels": labels}
        return {"pixel_values": images.contiguous(), "labels": labels}


class _TextCollate:
    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        texts = [item["text"] for item in items]
        pairs = [item["text_pair"] for item in items] if "text_pair" in items[0] else None
        # Sentence pairs: the tokenizer's own pair encoding ([CLS] a [SEP] b [SEP], token type ids), the longer
        # text trimmed first when the pair is too long.
        encoded = self.spec.tokenizer(texts, pairs, padding=True, truncation="longest_first" if pairs else True,
                                      max_length=self.spec.max_length, return_tensors="pt")
        batch = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        labels = [item["label"] for item in items]
        real = any(isinstance(y, float) for y in labels)  # regression targets
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if real else torch.long)
        return batch


def _block_collate(rows: list[tuple[Tensor]]) -> dict[str, Tensor]:
    ids = torch.stack([row[0] for row in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _check_compatible(ds: LayerwiseDataset, spec: InputSpec) -> None:
    allowed = _COMPATIBLE[ds.kind]
    if spec.modality not in allowed:
        takes = {"image": "images", "vector": "flattened images", "text": "labelled sentences", "tokens": "a text corpus"}
        raise LayerwiseError(
            f"the model takes {takes[spec.modality]} ({spec.modality}) but {ds.name} is {ds.kind} data: "
            f"pick a data set for a {spec.modality} model or a model for {'/'.join(allowed)} inputs"
        )
    if spec.modality in ("text", "tokens") and spec.tokenizer is None:
        raise LayerwiseError(f"the model's InputSpec has no tokenizer: set InputSpec.tokenizer to read {ds.name}")
    if ds.kind == "image":
        _check_image_shape(ds, spec)


def _check_image_shape(ds: LayerwiseDataset, spec: InputSpec) -> None:
    c, h, w = ds[0]["image"].shape
    if spec.channels is not None and spec.channels != c and not (c == 1 and spec.channels == 3):
        raise LayerwiseError(f"the model takes {spec.channels}-channel images but {ds.name} has {c}: pick a matching model")
    out_c = spec.channels or c
    if spec.mean is not None and len(spec.mean) != out_c:
        raise LayerwiseError(f"InputSpec.mean has {len(spec.mean)} values for {out_c}-channel images: give one per channel")
    if spec.modality == "vector":
        side = spec.image_size
        features = out_c * (side * side if side is not None else h * w)
        if spec.input_dim is not None and spec.input_dim != features:
            raise LayerwiseError(
                f"the model takes vectors of {spec.input_dim} features but {ds.name} gives {features}: pick a matching model"
            )


def make_loader(
    ds: LayerwiseDataset,
    spec: InputSpec,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    seq_len: int = 128,
    drop_last: bool = False,
) -> DataLoader:
    """Batches as dicts of the model's input keys plus ``labels``.

    image → ``pixel_values`` (B,C,H,W); vector → ``inputs`` (B, input_dim); text → tokenizer output
    (``input_ids``, ``attention_mask``, ``token_type_ids`` if returned), padded to the batch's
    longest and truncated at ``spec.max_length`` (sentence pairs through the tokenizer's pair encoding,
    truncation ``longest_first``); labels are long (classes) or float (regression targets); corpus → ``input_ids`` (B, seq_len) blocks,
    ``attention_mask`` of ones and ``labels`` equal to ``input_ids`` (unshifted: the consumer
    shifts for next-token prediction, as HF causal LMs do). Shuffling and augmentation are seeded
    by ``seed``, so a run replays exactly.
    """
    _check_compatible(ds, spec)
    if augment and ds.kind != "image":
        raise LayerwiseError(f"augmentation applies to images only, and {ds.name} is {ds.kind} data: drop `augment`",
                             option="augment")
    generator = torch.Generator().manual_seed(seed)
    common = dict(batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers, drop_last=drop_last)
    if ds.kind == "corpus":
        return DataLoader(TensorDataset(corpus_blocks(ds, spec.tokenizer, seq_len)), collate_fn=_block_collate, **common)
    if ds.kind == "text":
        return DataLoader(ds, collate_fn=_TextCollate(spec), **common)
    # A distinct stream for augmentation, so toggling shuffle does not change the augmentations drawn.
    augmenter = Augmenter(seed + 1) if augment else None
    return DataLoader(ds, collate_fn=_ImageCollate(spec, augmenter), **common)
