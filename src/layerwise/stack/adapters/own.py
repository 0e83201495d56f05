"""The project's own ViT, GPT and MLP (``layerwise.models``), built stack-shaped already."""

from __future__ import annotations

from torch import Tensor, nn

from layerwise.stack.cache import KVCache
from layerwise.stack.matching import mlp_permutations
from layerwise.stack.readout import Readout
from layerwise.stack.registry import register_adapter
from layerwise.stack.state import StackParts, StackState


@register_adapter("layerwise (ViT, GPT, MLP)", lambda m: hasattr(m, "arch") and hasattr(m, "config_dict"))
def own_model(model: nn.Module) -> StackParts:
    def embed(inputs: dict[str, Tensor], cache=None) -> StackState:
        if cache is not None:
            inputs = {**inputs, "cache": cache}
        return StackState(h=model.embed(inputs), mask=inputs.get("attention_mask"),
                          block_kwargs=model.block_kwargs(inputs), cache=cache)

    lm = model.pooling == "none"
    c = model.config
    permutations = mlp_permutations(c.depth, c.residual, c.batchnorm, c.residual) if model.arch == "mlp" else None
    return StackParts(
        embed=embed,
        blocks=model.blocks,
        readout=Readout(model.norm, model.head, model.pooling),
        task="lm" if lm else "classification",
        feature_pooling="last" if lm else "cls",
        hidden_size=model.config.dim,
        num_classes=None if lm else model.config.num_classes,
        call_block=lambda block, state: block(state.h, **state.block_kwargs),
        new_cache=KVCache if lm else None,
        fill_kv=(lambda block, state: block.fill_kv(state.h, state.cache)) if lm else None,
        context_length=model.config.max_len if lm else None,
        permutations=permutations,
    )
