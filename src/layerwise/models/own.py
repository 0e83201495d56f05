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
    def __init__(self, dim: int, heads: int, causal: bool, dropout: float, layer_idx: int = 0):
        super().__init__()
        self.heads, self.causal, self.dropout, self.layer_idx = heads, causal, dropout, layer_idx
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache=None) -> Tensor:
        """``attn_mask``: (B, 1, T, S) booleans, True = may attend; ``cache``: any object with Hugging Face's
        ``update(k, v, layer_idx) -> (K, V)`` (``layerwise.stack.KVCache`` or ``transformers.DynamicCache``)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # Without a mask the causal rule is SDPA's own, which aligns top-left: right only when T = S.
        # (One new token against a cache needs no mask at all: it may see every key.)
        causal = self.causal and attn_mask is None and q.shape[2] == k.shape[2]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def fill_kv(self, x: Tensor, cache) -> None:
        """Append the keys and values of ``x`` to ``cache`` and nothing else: the K and V rows of ``qkv`` only
        (early exit's state propagation; no queries, no attention)."""
        b, t, d = x.shape
        kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])
        k, v = kv.view(b, t, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        cache.update(k, v, self.layer_idx)


def causal_mask(attention_mask: Tensor | None, past: int, new: int) -> Tensor | None:
    """(B, 1, new, past+new) booleans: query i (at position past+i) may see key j iff j ≤ past+i and key j
    is not padding. None where SDPA needs no mask (no padding, and no cache or a single new token).

    A padding query sees itself too, so no row is empty (an empty row makes SDPA return NaN)."""
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (past == 0 or new == 1):
        return None
    device = attention_mask.device if attention_mask is not None else None
    keys = torch.arange(past + new, device=device)
    queries = torch.arange(past, past + new, device=device)
    allowed = keys[None, :] <= queries[:, None]
    if padded:
        allowed = (allowed[None] & attention_mask[:, None, :].bool()) | (keys[None, None, :] == queries[None, :, None])
    return allowed.unsqueeze(-3) if allowed.ndim == 3 else allowed[None, None]


class Block(nn.Module):
    """Pre-LN transformer block: h + attn(LN h), then + mlp(LN h)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, causal: bool, dropout: float, layer_idx: int = 0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal, dropout, layer_idx)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, cache=None) -> Tensor:
        x = x + self.attn(self.ln1(x), attn_mask, cache)
        return x + self.mlp(self.ln2(x))

    def fill_kv(self, x: Tensor, cache) -> None:
        """What ``forward(x, cache=cache)`` writes into the cache, without the attention output or the MLP."""
        self.attn.fill_kv(self.ln1(x), cache)


class StackModel(nn.Module):
    """Shared surface of the own models: forward = head(pool(norm(blocks(embed(x)))))."""

    arch: str
    pooling: str
    config: object

    def forward(self, **inputs: Tensor) -> Tensor:
        h, kwargs = self.embed(inputs), self.block_kwargs(inputs)
        for block in self.blocks:
            h = block(h, **kwargs)
        if self.pooling == "none":
            return self.head(self.norm(h))
        return self.head(self.norm(h[:, 0]))

    def block_kwargs(self, inputs: dict[str, Tensor]) -> dict:
        """What every block takes besides h (masks, cache); nothing for models without attention masks."""
        return {}

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
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, True, c.dropout, i) for i in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying, as GPT-2
        for name, p in self.named_parameters():  # GPT-2 init, with scaled residual projections
            if name.endswith("weight") and p.ndim == 2:
                std = 0.02 / math.sqrt(2 * c.depth) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def embed(self, inputs: dict[str, Tensor]) -> Tensor:
        """tok(ids) + pos(positions): ``position_ids`` when given (left padding), else counted on from the cache."""
        ids, positions = inputs["input_ids"], inputs.get("position_ids")
        if positions is None:
            past = _past_length(inputs.get("cache"))
            positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        return self.drop(self.tok(ids) + self.pos(positions))

    def block_kwargs(self, inputs: dict[str, Tensor]) -> dict:
        """The causal mask over padding and cached keys, and the key/value cache (``cache``, as Hugging Face
        now names it)."""
        cache = inputs.get("cache")
        new = inputs["input_ids"].shape[1]
        mask = causal_mask(inputs.get("attention_mask"), _past_length(cache), new)
        return {k: v for k, v in (("attn_mask", mask), ("cache", cache)) if v is not None}


def _past_length(cache) -> int:
    return 0 if cache is None else cache.get_seq_length()


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
