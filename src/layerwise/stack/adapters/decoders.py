"""Decoder language models: one factory for every Hugging Face causal LM laid out as
``body.<blocks>`` + ``body.<final norm>`` + ``lm_head``; GPT-2 and the Llama family are two lines of it."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from layerwise.stack.readout import Readout
from layerwise.stack.registry import hooked_embed, is_class, register_adapter
from layerwise.stack.state import StackParts, StackState


def decoder_lm(body: str, blocks: str, norm: str,
               fill_kv: Callable[[nn.Module, StackState], None] | None = None) -> Callable[[nn.Module], StackParts]:
    """Adapter for ``model.<body>.<blocks>`` blocks, ``model.<body>.<norm>`` final norm and ``model.lm_head``.

    The readout is per token (pooling "none"): logits = lm_head(norm(hˡ)), the norm recomputed on hˡ.
    ``fill_kv`` writes one block's keys/values for given hidden states (``LayerStack.fill_kv``).
    """

    def parts(model: nn.Module) -> StackParts:
        inner = getattr(model, body)
        layers = getattr(inner, blocks)
        return StackParts(
            embed=hooked_embed(model, layers[0], use_cache=False),
            blocks=layers,
            readout=Readout(getattr(inner, norm), model.lm_head, "none"),
            task="lm",
            feature_pooling="last",
            hidden_size=model.config.hidden_size,
            new_cache=lambda: _dynamic_cache(model),
            context_length=getattr(model.config, "n_positions", None) or model.config.max_position_embeddings,
            fill_kv=fill_kv,
        )

    return parts


def _dynamic_cache(model: nn.Module):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _heads(x: Tensor, head_dim: int) -> Tensor:
    """(B, T, H·d) → (B, H, T, d), as the HF attention modules shape their keys and values."""
    return x.view(*x.shape[:-1], -1, head_dim).transpose(1, 2)


def gpt2_fill_kv(block: nn.Module, state: StackState) -> None:
    """GPT2Block's cache write: K, V = split(c_attn(ln_1(h))) without the query third of ``c_attn``
    (a ``Conv1D``: x @ W + b, W of shape (D, 3D))."""
    attn, d = block.attn, block.attn.split_size
    kv = torch.addmm(attn.c_attn.bias[d:], block.ln_1(state.h).reshape(-1, d), attn.c_attn.weight[:, d:])
    k, v = kv.view(*state.h.shape[:-1], 2 * d).split(d, dim=-1)
    state.cache.update(_heads(k, attn.head_dim), _heads(v, attn.head_dim), attn.layer_idx)


def llama_fill_kv(block: nn.Module, state: StackState) -> None:
    """LlamaDecoderLayer's cache write: K = RoPE(k_proj(norm(h))) at the state's positions, V = v_proj(norm(h))."""
    from transformers.models.llama.modeling_llama import rotate_half

    attn = block.self_attn
    x = block.input_layernorm(state.h)
    k, v = _heads(attn.k_proj(x), attn.head_dim), _heads(attn.v_proj(x), attn.head_dim)
    cos, sin = (t.unsqueeze(1) for t in state.block_kwargs["position_embeddings"])
    state.cache.update(k * cos + rotate_half(k) * sin, v, attn.layer_idx)


gpt2_lm = register_adapter("GPT2LMHeadModel", is_class("GPT2LMHeadModel"))(
    decoder_lm("transformer", "h", "ln_f", gpt2_fill_kv))
llama_lm = register_adapter("LlamaForCausalLM (and Llama-style decoders: Mistral, Qwen2)",
                            is_class("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"))(
    decoder_lm("model", "layers", "norm", llama_fill_kv))
