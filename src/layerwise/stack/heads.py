"""Exit heads: the readout serving each layer 1..L, shared or (multi-exit baseline) one copy per layer."""

from __future__ import annotations

import copy

from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.stack.layer_stack import LayerStack


def make_exit_heads(stack: LayerStack) -> nn.ModuleList:
    """Multi-exit baseline: an own copy of the readout (norm + head) for each layer 1..L."""
    return nn.ModuleList(copy.deepcopy(stack.readout) for _ in range(stack.num_layers))


def exit_readouts(stack: LayerStack, exit_heads: nn.ModuleList | None) -> list[nn.Module]:
    """The readout serving each layer 1..L: a multi-exit model's own heads, else the shared readout."""
    if exit_heads is None:
        return [stack.readout] * stack.num_layers
    if len(exit_heads) != stack.num_layers:
        raise LayerwiseError(f"{len(exit_heads)} exit heads for {stack.num_layers} layers: re-save the model")
    return list(exit_heads)
