"""Vision transformers: Hugging Face ViT / DeiT classifiers and timm's VisionTransformer."""

from __future__ import annotations

from torch import Tensor, nn

from layerwise.stack.readout import Readout
from layerwise.stack.registry import block_list, hooked_embed, is_class, register_adapter
from layerwise.stack.state import StackParts, StackState


@register_adapter("ViTForImageClassification / DeiTForImageClassification",
                  is_class("ViTForImageClassification", "DeiTForImageClassification"))
def vit_classifier(model: nn.Module) -> StackParts:
    body = model.vit if hasattr(model, "vit") else model.deit
    blocks = block_list(body, model.config.num_hidden_layers)
    return StackParts(
        embed=hooked_embed(model, blocks[0]),
        blocks=blocks,
        readout=Readout(body.layernorm, model.classifier, "cls"),
        task="classification",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
        num_classes=getattr(model.config, "num_labels", None),
    )


def _is_timm_vit(model: nn.Module) -> bool:
    return type(model).__name__ == "VisionTransformer" and type(model).__module__.startswith("timm.")


@register_adapter("timm VisionTransformer", _is_timm_vit)
def timm_vit(model: nn.Module) -> StackParts:
    prefix = model.num_prefix_tokens
    pooling = "mean" if model.global_pool == "avg" else "cls"

    def embed(inputs: dict[str, Tensor]) -> StackState:
        x = model.patch_embed(inputs["pixel_values"])
        x = model.norm_pre(model.patch_drop(model._pos_embed(x)))
        return StackState(h=x)

    def pool_tokens(h: Tensor, mask: Tensor | None) -> Tensor:
        return h[:, prefix:].mean(dim=1) if pooling == "mean" else h[:, 0]

    head = nn.Sequential(model.fc_norm, model.head_drop, model.head)
    return StackParts(
        embed=embed,
        blocks=model.blocks,
        readout=Readout(model.norm, head, pooling, pool_fn=pool_tokens),
        task="classification",
        feature_pooling=pooling,
        hidden_size=model.embed_dim,
        num_classes=model.num_classes,
        call_block=lambda block, state: block(state.h),
    )
