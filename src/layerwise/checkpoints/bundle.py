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


READOUT_POOLINGS = ("mean", "cls", "last")


def set_readout_pooling(bundle: ModelBundle, pooling: str) -> None:
    """Pool the readout's tokens by ``pooling`` (masked mean, first token, last real token): a classification or
    regression readout built on the model's own pooling, e.g. the masked mean a sentence encoder was trained
    with. Only the layer stack's readout changes (a Hugging Face model's own forward keeps its [CLS] pooler
    input); ``save_model`` records it, so the saved model reloads with it."""
    from layerwise.errors import LayerwiseError

    readout = bundle.stack.readout
    if pooling not in READOUT_POOLINGS:
        raise LayerwiseError(f"unknown readout pooling {pooling!r}: choose one of {', '.join(READOUT_POOLINGS)}")
    if bundle.stack.task not in ("classification", "regression") or readout.pool_fn is not None:
        raise LayerwiseError(f"{bundle.name} has no pooled classification readout to change (its task is "
                             f"{bundle.stack.task}): the readout pooling applies to classification and regression heads")
    readout.pooling = pooling


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
