"""``ModelBundle``: a model, its layer stack, what it consumes, and optional multi-exit heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from layerwise.data.spec import InputSpec
from layerwise.stack import LayerStack
from layerwise.stack.surgery import keep_blocks


@dataclass
class ModelBundle:
    """A model, its layer stack, and what it consumes."""

    name: str
    model: nn.Module
    stack: LayerStack
    inputs: InputSpec
    exit_heads: nn.ModuleList | None = None  # multi-exit baseline: one readout per layer 1..L
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.stack.task


def make_bundle(name: str, model: nn.Module, inputs: InputSpec, feature_pooling: str | None = None) -> ModelBundle:
    """Wrap ``model`` in its layer stack; ``feature_pooling`` overrides the adapter's token choice."""
    stack = LayerStack(model)
    if feature_pooling:
        stack.feature_pooling = feature_pooling
    return ModelBundle(name=name, model=model, stack=stack, inputs=inputs)


def truncate(bundle: ModelBundle, k: int) -> ModelBundle:
    """A new bundle holding blocks 1..k and the readout that serves layer k (weights copied).

    Its model's own forward equals ``bundle.stack(inputs, upto=k)`` = readout(hᵏ); a multi-exit model's
    head k becomes the copy's readout.
    """
    model = keep_blocks(bundle.model, bundle.stack, k)
    stack = LayerStack(model)
    stack.feature_pooling = bundle.stack.feature_pooling
    stack.readout.pooling = bundle.stack.readout.pooling
    if bundle.exit_heads is not None:
        # The readout references the model's own norm/head modules, so loading into it rewrites them.
        stack.readout.load_state_dict(bundle.exit_heads[k - 1].state_dict())
    meta = {key: v for key, v in bundle.meta.items() if key != "exit_heads"}
    meta["truncated"] = {"from": bundle.name, "k": k, "of": bundle.stack.num_layers,
                         "exit_head": bundle.exit_heads is not None}
    return ModelBundle(name=f"{bundle.name}[:{k}]", model=model, stack=stack, inputs=bundle.inputs, meta=meta)
