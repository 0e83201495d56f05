"""Batches as the models consume them: dicts of input tensors plus ``labels``."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError

Batch = dict[str, Tensor]


def model_inputs(batch: Batch) -> Batch:
    """The batch without its ``labels``: what the wrapped model's forward takes."""
    return {k: v for k, v in batch.items() if k != "labels"}


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Every tensor of the batch on ``device``."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def materialize(loader: Iterable[Batch], device: torch.device | str) -> list[Batch]:
    """All batches on the device up front, so timings exclude data loading."""
    batches = [to_device(b, device) for b in loader]
    if not batches:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    return batches


def labels_of(batches: Iterable[Batch]) -> Tensor:
    """The (N,) labels of pre-materialised batches, on the CPU."""
    return torch.cat([b["labels"].cpu() for b in batches])
