"""Model surgery: the one place that rewrites which blocks a model holds.

``keep_blocks(model, stack, k)`` returns a copy of the model holding blocks 1..k, with its config saying
so (own models: ``depth = k``; Hugging Face: ``num_hidden_layers = k``), so that the copy's own forward is
readout(hᵏ) and it saves and loads like any model.
"""

from __future__ import annotations

import copy
import dataclasses

from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.stack.layer_stack import LayerStack


def module_path(model: nn.Module, target: nn.Module) -> str:
    """The dotted name of ``target`` inside ``model``."""
    for name, module in model.named_modules():
        if module is target:
            return name
    raise LayerwiseError(f"cannot locate the blocks inside {type(model).__name__}: truncation is unsupported")


def keep_blocks(model: nn.Module, stack: LayerStack, k: int) -> nn.Module:
    """A deep copy of ``model`` with blocks 1..k only (weights copied, the original untouched)."""
    L = stack.num_layers
    if not 1 <= k <= L:
        raise LayerwiseError(f"k={k} out of range: this model has layers 1..{L}")
    own = dataclasses.is_dataclass(getattr(model, "config", None)) and hasattr(model.config, "depth")
    if not own and not hasattr(getattr(model, "config", None), "num_hidden_layers"):
        raise LayerwiseError(f"cannot truncate {type(model).__name__}: only own and Hugging Face models")
    path = module_path(model, stack.blocks)
    copied = copy.deepcopy(model)
    parent_path, _, attr = path.rpartition(".")
    parent = copied.get_submodule(parent_path) if parent_path else copied
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:k]))
    if own:
        copied.config = dataclasses.replace(copied.config, depth=k)
    else:
        cfg = copied.config
        cfg.num_hidden_layers = k
        if isinstance(getattr(cfg, "layer_types", None), list):  # per-layer attention types (Llama-style)
            cfg.layer_types = cfg.layer_types[:k]
    return copied
