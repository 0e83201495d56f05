"""Decoder language models: one factory for every Hugging Face causal LM laid out as
``body.<blocks>`` + ``body.<final norm>`` + ``lm_head``; GPT-2 and the Llama family are two lines of it."""

from __future__ import annotations

from typing import Callable

from torch import nn

from layerwise.stack.readout import Readout
from layerwise.stack.registry import hooked_embed, is_class, register_adapter
from layerwise.stack.state import StackParts


def decoder_lm(body: str, blocks: str, norm: str) -> Callable[[nn.Module], StackParts]:
    """Adapter for ``model.<body>.<blocks>`` blocks, ``model.<body>.<norm>`` final norm and ``model.lm_head``.

    The readout is per token (pooling "none"): logits = lm_head(norm(hˡ)), the norm recomputed on hˡ.
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
        )

    return parts


def _dynamic_cache(model: nn.Module):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


gpt2_lm = register_adapter("GPT2LMHeadModel", is_class("GPT2LMHeadModel"))(decoder_lm("transformer", "h", "ln_f"))
llama_lm = register_adapter("LlamaForCausalLM (and Llama-style decoders: Mistral, Qwen2)",
                            is_class("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"))(
    decoder_lm("model", "layers", "norm"))
