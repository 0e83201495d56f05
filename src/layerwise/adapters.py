"""Adapters: the only place that knows where an architecture keeps its blocks, final norm and head.

To support a new architecture, write a function ``model -> StackParts`` and register it:

    @register_adapter("my-arch", lambda m: type(m).__name__ == "MyModel")
    def my_arch(model): return StackParts(embed=..., blocks=..., readout=Readout(norm, head, "cls"), ...)

Hugging Face models are embedded by running the model's own forward up to its first block and
capturing that block's inputs (hidden states, attention mask, rotary position embeddings, …) with a
pre-hook, so masks and positions are built exactly as the model builds them, in any transformers version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.stack import Readout, StackParts, StackState


@dataclass(frozen=True)
class Adapter:
    name: str
    matches: Callable[[nn.Module], bool]
    parts: Callable[[nn.Module], StackParts]


ADAPTERS: list[Adapter] = []


def register_adapter(name: str, matches: Callable[[nn.Module], bool]):
    """Decorator: register ``parts(model) -> StackParts`` for models where ``matches(model)`` is true."""

    def wrap(parts: Callable[[nn.Module], StackParts]) -> Callable[[nn.Module], StackParts]:
        ADAPTERS.insert(0, Adapter(name, matches, parts))  # later registrations take precedence
        return parts

    return wrap


def find_adapter(model: nn.Module) -> Adapter:
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter
    names = ", ".join(sorted(a.name for a in ADAPTERS))
    raise LayerwiseError(
        f"unsupported architecture {type(model).__name__}: supported are {names}; "
        "add one with layerwise.adapters.register_adapter (see its docstring)"
    )


class _StopForward(Exception):
    pass


def hooked_embed(model: nn.Module, first_block: nn.Module, **call_kwargs) -> Callable[[dict], StackState]:
    """Embed by running ``model`` until ``first_block`` and capturing its inputs."""

    def embed(inputs: dict[str, Tensor]) -> StackState:
        captured: dict = {}

        def hook(module, args, kwargs):
            captured["args"], captured["kwargs"] = args, dict(kwargs)
            raise _StopForward

        handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            model(**inputs, **call_kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise LayerwiseError(f"{type(model).__name__} never reached its first block; check the inputs")
        args, kwargs = captured["args"], captured["kwargs"]
        h, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        return StackState(h=h, mask=inputs.get("attention_mask"), block_args=rest, block_kwargs=kwargs)

    return embed


def _is(*class_names: str) -> Callable[[nn.Module], bool]:
    return lambda m: type(m).__name__ in class_names


def _num_labels(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "num_labels", None)


# ---- the project's own models -------------------------------------------------------------------


@register_adapter("layerwise (ViT, GPT, MLP)", lambda m: hasattr(m, "arch") and hasattr(m, "config_dict"))
def own_model(model: nn.Module) -> StackParts:
    def embed(inputs: dict[str, Tensor]) -> StackState:
        return StackState(h=model.embed(inputs), mask=inputs.get("attention_mask"))

    lm = model.pooling == "none"
    return StackParts(
        embed=embed,
        blocks=model.blocks,
        readout=Readout(model.norm, model.head, model.pooling),
        task="lm" if lm else "classification",
        feature_pooling="last" if lm else "cls",
        hidden_size=model.config.dim,
        num_classes=None if lm else model.config.num_classes,
        call_block=lambda block, state: block(state.h),
    )


# ---- Hugging Face ---------------------------------------------------------------------------------


@register_adapter("BertModel", _is("BertModel"))
def bert_encoder(model: nn.Module) -> StackParts:
    # A bare encoder: no head, so the readout returns pooled features. Sentence-embedding models
    # (MiniLM) pool by masked mean; the zoo sets that from the model's pooling config.
    return StackParts(
        embed=hooked_embed(model, model.encoder.layer[0]),
        blocks=model.encoder.layer,
        readout=Readout(None, None, "cls"),
        task="encoder",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
    )


@register_adapter("BertForSequenceClassification", _is("BertForSequenceClassification"))
def bert_classifier(model: nn.Module) -> StackParts:
    bert = model.bert
    # BERT is post-LN (each block ends in a LayerNorm), so there is no final norm; the pooler is head.
    head = nn.Sequential(bert.pooler.dense, bert.pooler.activation, model.dropout, model.classifier)
    return StackParts(
        embed=hooked_embed(model, bert.encoder.layer[0]),
        blocks=bert.encoder.layer,
        readout=Readout(None, head, "cls"),
        task="classification",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
        num_classes=_num_labels(model),
    )


@register_adapter("ViTForImageClassification / DeiTForImageClassification",
                  _is("ViTForImageClassification", "DeiTForImageClassification"))
def vit_classifier(model: nn.Module) -> StackParts:
    body = model.vit if hasattr(model, "vit") else model.deit
    return StackParts(
        embed=hooked_embed(model, body.layers[0]),
        blocks=body.layers,
        readout=Readout(body.layernorm, model.classifier, "cls"),
        task="classification",
        feature_pooling="cls",
        hidden_size=model.config.hidden_size,
        num_classes=_num_labels(model),
    )


@register_adapter("GPT2LMHeadModel", _is("GPT2LMHeadModel"))
def gpt2_lm(model: nn.Module) -> StackParts:
    t = model.transformer
    return StackParts(
        embed=hooked_embed(model, t.h[0], use_cache=False),
        blocks=t.h,
        readout=Readout(t.ln_f, model.lm_head, "none"),
        task="lm",
        feature_pooling="last",
        hidden_size=model.config.hidden_size,
    )


@register_adapter("LlamaForCausalLM (and Llama-style decoders: Mistral, Qwen2)",
                  _is("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"))
def llama_lm(model: nn.Module) -> StackParts:
    m = model.model
    return StackParts(
        embed=hooked_embed(model, m.layers[0], use_cache=False),
        blocks=m.layers,
        readout=Readout(m.norm, model.lm_head, "none"),
        task="lm",
        feature_pooling="last",
        hidden_size=model.config.hidden_size,
    )


def _is_timm_vit(model: nn.Module) -> bool:
    return type(model).__name__ == "VisionTransformer" and type(model).__module__.startswith("timm.")


@register_adapter("timm VisionTransformer", _is_timm_vit)
def timm_vit(model: nn.Module) -> StackParts:
    prefix = model.num_prefix_tokens

    def embed(inputs: dict[str, Tensor]) -> StackState:
        x = model.patch_embed(inputs["pixel_values"])
        x = model.norm_pre(model.patch_drop(model._pos_embed(x)))
        return StackState(h=x)

    def pool_tokens(h: Tensor, mask: Tensor | None) -> Tensor:
        if model.global_pool == "avg":
            return h[:, prefix:].mean(dim=1)
        return h[:, 0]

    head = nn.Sequential(model.fc_norm, model.head_drop, model.head)
    return StackParts(
        embed=embed,
        blocks=model.blocks,
        readout=Readout(model.norm, head, "cls" if model.global_pool != "avg" else "mean", pool_fn=pool_tokens),
        task="classification",
        feature_pooling="cls" if model.global_pool != "avg" else "mean",
        hidden_size=model.embed_dim,
        num_classes=model.num_classes,
        call_block=lambda block, state: block(state.h),
    )


def supported_architectures() -> list[str]:
    return sorted(a.name for a in ADAPTERS)

