"""Truncation: the first k blocks plus the readout as a standalone model, and the minimal depth.

``truncate(bundle, k)`` copies the model and keeps blocks 1..k, so that the copy's own forward equals
``stack(inputs, upto=k)`` = readout(hᵏ). A multi-exit model's head k becomes the copy's readout. The copy
saves and loads like any model (``zoo.save_model`` / ``load_model``): own models record depth = k in their
config, Hugging Face models ``num_hidden_layers = k``.

Minimal depth (paper Fig. 4): the smallest k with acc_k ≥ maxₗ acc_ℓ − δ.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Sequence

from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.stack import LayerStack


def minimal_depth(per_layer_accuracy: Sequence[float], delta: float = 0.01) -> int:
    """Smallest layer k (1-based, over layers 1..L) whose accuracy is within δ of the best layer's."""
    if not per_layer_accuracy:
        raise LayerwiseError("no per-layer accuracies: evaluate on a non-empty data set")
    best = max(per_layer_accuracy)
    return next(k for k, acc in enumerate(per_layer_accuracy, start=1) if acc >= best - delta - 1e-12)


def _module_path(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise LayerwiseError(f"cannot locate the blocks inside {type(model).__name__}: truncation is unsupported")


def truncate(bundle, k: int):
    """A new ``ModelBundle`` holding blocks 1..k and the readout that serves layer k (weights copied)."""
    from layerwise.models import StackModel
    from layerwise.zoo import ModelBundle

    L = bundle.stack.num_layers
    if not 1 <= k <= L:
        raise LayerwiseError(f"k={k} out of range: this model has layers 1..{L}")
    if not isinstance(bundle.model, StackModel) and not hasattr(getattr(bundle.model, "config", None),
                                                                 "num_hidden_layers"):
        raise LayerwiseError(f"cannot truncate {type(bundle.model).__name__}: only own and Hugging Face models")
    path = _module_path(bundle.model, bundle.stack.blocks)
    model = copy.deepcopy(bundle.model)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:k]))
    if isinstance(model, StackModel):
        model.config = dataclasses.replace(model.config, depth=k)
    else:
        cfg = model.config
        cfg.num_hidden_layers = k
        if isinstance(getattr(cfg, "layer_types", None), list):  # per-layer attention types (Llama-style)
            cfg.layer_types = cfg.layer_types[:k]
    stack = LayerStack(model)
    stack.feature_pooling = bundle.stack.feature_pooling
    stack.readout.pooling = bundle.stack.readout.pooling
    if bundle.exit_heads is not None:
        # The readout references the model's own norm/head modules, so loading into it rewrites them.
        stack.readout.load_state_dict(bundle.exit_heads[k - 1].state_dict())
    meta = {key: v for key, v in bundle.meta.items() if key != "exit_heads"}
    meta["truncated"] = {"from": bundle.name, "k": k, "of": L, "exit_head": bundle.exit_heads is not None}
    return ModelBundle(name=f"{bundle.name}[:{k}]", model=model, stack=stack, inputs=bundle.inputs, meta=meta)


def truncate_model(spec: str, k: int, out: str | Path) -> Path:
    """``layerwise truncate``: load, truncate to k blocks, save to ``out``."""
    from layerwise.zoo import load_model, save_model

    return save_model(truncate(load_model(spec), k), out)


__all__ = ["truncate", "truncate_model", "minimal_depth"]
