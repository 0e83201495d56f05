"""The project's own networks, built stack-shaped: ViT, GPT and MLP (``own.py``)."""

from layerwise.models.own import (
    GPT,
    MLP,
    OWN_MODELS,
    Attention,
    Block,
    GPTConfig,
    MLPBlock,
    MLPConfig,
    StackModel,
    ViT,
    ViTConfig,
    build_own,
)

__all__ = [
    "GPT",
    "MLP",
    "OWN_MODELS",
    "Attention",
    "Block",
    "GPTConfig",
    "MLPBlock",
    "MLPConfig",
    "StackModel",
    "ViT",
    "ViTConfig",
    "build_own",
]
