"""The layer stack: a model viewed as embed → blocks → readout, and the adapters that build it.

- ``layer_stack``: ``LayerStack``, run block by block, read every layer, apply the readout anywhere;
- ``readout``: the model's own norm + pooling + head, and its fast path for early exit;
- ``state``: what flows between blocks and what adapters return;
- ``heads``: the readout serving each layer (shared, or the multi-exit baseline's own heads);
- ``lens``: how every layer is read (the logit lens, the model's own readout; or a tuned lens's translators);
- ``registry`` and ``adapters/``: one adapter per model family;
- ``surgery``: the one place that rewrites a model's blocks (truncation) or weights (the stack's groups,
  interpolation, BatchNorm re-estimation);
- ``matching``: weight matching of hidden units (permutation specs, ``weight_matching``).
"""

from layerwise.stack import adapters  # noqa: F401  (registers every adapter)
from layerwise.stack.cache import KVCache
from layerwise.stack.heads import exit_readouts, make_exit_heads
from layerwise.stack.layer_stack import LayerStack
from layerwise.stack.lens import Lens, LogitLens, TunedLens, layer_readouts, load_tuned_lens, make_lens
from layerwise.stack.readout import POOLINGS, Pooling, Readout, fast_readout, pool
from layerwise.stack.registry import (
    ADAPTERS,
    Adapter,
    find_adapter,
    hooked_embed,
    register_adapter,
    supported_architectures,
)
from layerwise.stack.state import StackParts, StackState, Task, default_call_block

__all__ = [
    "KVCache",
    "LayerStack",
    "Readout",
    "StackParts",
    "StackState",
    "Task",
    "Pooling",
    "POOLINGS",
    "pool",
    "fast_readout",
    "default_call_block",
    "ADAPTERS",
    "Adapter",
    "find_adapter",
    "hooked_embed",
    "register_adapter",
    "supported_architectures",
    "exit_readouts",
    "make_exit_heads",
    "Lens",
    "LogitLens",
    "TunedLens",
    "layer_readouts",
    "load_tuned_lens",
    "make_lens",
]
