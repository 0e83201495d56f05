"""Feature capture: one forward pass per batch yields every layer's state, streamed over a loader
(``model_loader``: the data as a model consumes it, in the dtype of its weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset, make_loader
from layerwise.data.batches import to_device
from layerwise.errors import LayerwiseError
from layerwise.parallel import speaks
from layerwise.stack import LayerStack, StackState


@dataclass
class CapturedBatch:
    """Layers 0..L of one batch. ``states[l].h`` is (B, T, D); ``features(pooling)`` pools them."""

    stack: LayerStack
    states: list[StackState]
    labels: Tensor | None

    def features(self, pooling: str | None = None) -> list[Tensor]:
        return [self.stack.features(s, pooling) for s in self.states]


@torch.no_grad()
def capture(
    stack: LayerStack,
    loader: Iterable[dict[str, Tensor]],
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "capture",
) -> Iterator[CapturedBatch]:
    """Stream batches through the stack in eval mode, yielding all L+1 layers of each batch.

    Nothing is kept between batches: consumers accumulate what their measure needs.
    """
    device = device or next(stack.parameters()).device
    was_training = stack.training
    stack.eval()
    seen = 0
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(loader, total=total, desc=desc, disable=not (progress and speaks()), leave=False):
            batch = to_device(batch, device)
            seen += 1
            states = list(stack.states(batch))
            if stack.carry:  # a model placed across devices: every layer's state on the one device asked for
                states = [s.to(torch.device(device)) for s in states]
            yield CapturedBatch(stack, states, batch.get("labels"))
    finally:
        stack.train(was_training)
    if seen == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")


class _CastInputs:
    """A loader whose floating inputs are cast to the model's dtype: a float64 or half-precision model rejects
    the float32 images and vectors the loaders make. Labels are left as they are."""

    def __init__(self, loader, dtype: torch.dtype):
        self.loader, self.dtype = loader, dtype

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):  # the wrapped loader's shard record (n_local, first_sample)
        return getattr(self.__dict__["loader"], name)

    def __iter__(self):
        for batch in self.loader:
            yield {k: v.to(self.dtype) if k != "labels" and isinstance(v, Tensor) and v.is_floating_point() else v
                   for k, v in batch.items()}


def model_loader(bundle: ModelBundle, ds: LayerwiseDataset, batch_size: int, *, shard: bool = False):
    """The data as ``bundle`` consumes it, floating inputs in the dtype of its weights; with ``shard``, only this
    process's contiguous run of batches (``parallel.shard_loader``; all of them in one process)."""
    from layerwise.parallel import shard_loader

    loader = make_loader(ds, bundle.inputs, batch_size)
    loader = shard_loader(loader) if shard else loader
    dtype = next(bundle.model.parameters()).dtype
    return loader if dtype == torch.float32 else _CastInputs(loader, dtype)
