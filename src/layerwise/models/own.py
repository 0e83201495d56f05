"""The project's own small models, built stack-shaped: ``embed`` → ``blocks`` → ``norm`` + ``head``.

- ``ViT``: a pre-LN vision transformer with a [CLS] token (DeiT-style, sized by config).
- ``GPT``: a nanoGPT-style causal decoder.
- ``MLP``: an MLP with or without residual connections, for the claim that COS tracks CKA only with skips
  (optionally with BatchNorm in each block).

Each saves as ``config.json`` + ``model.safetensors`` (see ``layerwise.checkpoints.save_model``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 10
    dropout: float = 0.0


@dataclass
class GPTConfig:
    vocab_size: int = 257
    max_len: int = 256
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0


@dataclass
class MLPConfig:
    input_dim: int = 64
    dim: int = 128
    depth: int = 8
    num_classes: int = 10
    residual: bool = True
    batchnorm: bool = False  # BatchNorm1d after each block's linear map (before the GELU)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool, dropout: float):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN transformer block: h + attn(LN h), then + mlp(LN h)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, causal: bool, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class StackModel(nn.Module):
    """Shared surface of the own models: forward = head(pool(norm(blocks(embed(x)))))."""

    arch: str
    pooling: str
    config: object

    def forward(self, **inputs: Tensor) -> Tensor:
        h = self.embed(inputs)
        for block in self.blocks:
            h = block(h)
        if self.pooling == "none":
            return self.head(self.norm(h))
        return self.head(self.norm(h[:, 0]))

    def config_dict(self) -> dict:
        return {"layerwise_arch": self.arch, **asdict(self.config)}


class ViT(StackModel):
    arch, pooling = "vit", "cls"

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = c = config
        n_patches = (c.image_size // c.patch_size) ** 2
        self.patch = nn.Conv2d(c.channels, c.dim, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, c.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, False, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        x = self.patch(inputs["pixel_values"]).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos


class GPT(StackModel):
    arch, pooling = "gpt", "none"

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size, c.dim)
        self.pos = nn.Embedding(c.max_len, c.dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, True, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying, as GPT-2
        for name, p in self.named_parameters():  # GPT-2 init, with scaled residual projections
            if name.endswith("weight") and p.ndim == 2:
                std = 0.02 / math.sqrt(2 * c.depth) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        ids = inputs["input_ids"]
        return self.drop(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))


class MLPBlock(nn.Module):
    """h + gelu(bn(fc h)) with skips, gelu(bn(fc h)) without; ``bn`` is the identity unless ``batchnorm``."""

    def __init__(self, dim: int, residual: bool, batchnorm: bool = False):
        super().__init__()
        self.residual = residual
        self.fc = nn.Linear(dim, dim)
        self.bn = nn.BatchNorm1d(dim) if batchnorm else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x)
        if self.bn is not None:  # features are (B, 1, D): BatchNorm1d normalises channels on dim 1
            y = self.bn(y.transpose(1, 2)).transpose(1, 2)
        y = F.gelu(y)
        return x + y if self.residual else y


class MLP(StackModel):
    """Features are (B, 1, D): one 'token', so the same pooling code applies."""

    arch, pooling = "mlp", "cls"

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = c = config
        self.inp = nn.Linear(c.input_dim, c.dim)
        self.blocks = nn.ModuleList(MLPBlock(c.dim, c.residual, c.batchnorm) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim) if c.residual else nn.Identity()
        self.head = nn.Linear(c.dim, c.num_classes)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.inp(inputs["inputs"].flatten(1)).unsqueeze(1)


OWN_MODELS: dict[str, tuple[type[StackModel], type]] = {
    "vit": (ViT, ViTConfig),
    "gpt": (GPT, GPTConfig),
    "mlp": (MLP, MLPConfig),
}


def build_own(config: dict) -> StackModel:
    """Build an own model from a config dict holding ``layerwise_arch`` and its fields."""
    config = dict(config)
    cls, cfg_cls = OWN_MODELS[config.pop("layerwise_arch")]
    return cls(cfg_cls(**config))
