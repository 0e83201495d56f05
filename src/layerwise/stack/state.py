"""What flows between blocks (``StackState``) and what an adapter hands the stack (``StackParts``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from layerwise.stack.readout import Readout

Task = Literal["classification", "regression", "lm", "encoder"]  # regression: a one-output head


@dataclass
class StackState:
    """Hidden states between blocks plus what each block needs besides them (masks, positions)."""

    h: Tensor
    mask: Tensor | None = None  # (B, T) padding mask of the inputs, 1 = real token
    block_args: tuple = ()
    block_kwargs: dict[str, Any] = field(default_factory=dict)
    # decoders: the key/value cache the stack's caller owns (``LayerStack.new_cache``); the blocks receive it
    # among ``block_args``/``block_kwargs`` under whatever name the installed transformers gives it, and the
    # ``fill_kv`` hooks write through this reference, so no hook needs to know that name
    cache: Any = None

    def select(self, rows: Tensor) -> StackState:
        """Keep only the given batch rows (early-exit compaction); shared broadcast tensors are kept whole."""
        b = self.h.shape[0]

        def take(x: Any) -> Any:
            if isinstance(x, Tensor) and x.ndim >= 2 and x.shape[0] == b:
                return x[rows]
            if isinstance(x, tuple):
                return tuple(take(v) for v in x)
            if isinstance(x, list):
                return [take(v) for v in x]
            return x

        return StackState(
            h=self.h[rows],
            mask=None if self.mask is None else self.mask[rows],
            block_args=take(self.block_args),
            block_kwargs={k: take(v) for k, v in self.block_kwargs.items()},
            cache=self.cache,
        )


    def to(self, device: torch.device | None) -> StackState:
        """The state with its tensors (hidden states, mask, the blocks' tensor inputs) on ``device``; the cache
        stays where it is (each layer's keys and values live on their block's device). None: unchanged."""
        if device is None or self.h.device == device:
            return self
        return StackState(h=self.h.to(device), mask=move(self.mask, device), block_args=move(self.block_args, device),
                          block_kwargs=move(self.block_kwargs, device), cache=self.cache)


def move(x: Any, device: torch.device) -> Any:
    """Tensors in ``x`` (nested in tuples, lists and dicts) on ``device``; anything else as it is."""
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(move(v, device) for v in x)
    if isinstance(x, dict):
        return {k: move(v, device) for k, v in x.items()}
    return x


def execution_device(module: nn.Module) -> torch.device | None:
    """Where ``module`` computes: the execution device of the first Accelerate hook in it (a dispatched model:
    offloaded weights sit on the meta device and are loaded there), else its first real weight's device."""
    for m in module.modules():
        hook = getattr(m, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return None


@dataclass
class StackParts:
    """What an adapter hands the stack."""

    embed: Callable[..., StackState]  # (inputs) -> h⁰ and the block context; decoders also take (inputs, cache)
    blocks: nn.ModuleList
    readout: Readout
    task: Task
    feature_pooling: str  # the model's own token choice for features (cls / last / mean)
    hidden_size: int
    num_classes: int | None = None
    call_block: Callable[[nn.Module, StackState], Tensor] | None = None
    new_cache: Callable[[], Any] | None = None  # decoders: an empty key/value cache (HF ``Cache`` API)
    context_length: int | None = None  # decoders: the most positions the model can attend over
    # decoders: append block's keys/values for ``state.h`` to the cache without running the rest of the block
    # (early exit's state propagation); None = run the whole block instead (same cache, no saving)
    fill_kv: Callable[[nn.Module, StackState], None] | None = None
    # weight matching: tensor name → the permutation acting on each axis (``stack.matching``); None = unknown
    permutations: dict[str, tuple[str | None, ...]] | None = None


def default_call_block(block: nn.Module, state: StackState) -> Tensor:
    """Hugging Face blocks take the captured positional/keyword inputs and may return a tuple."""
    out = block(state.h, *state.block_args, **state.block_kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out
