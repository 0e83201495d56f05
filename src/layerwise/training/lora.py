"""Parameter-efficient fine-tuning with LoRA through the ``peft`` library (``pip install 'layerwise[peft]'``).

``apply_peft(bundle, cfg)`` wraps the model in ``peft.get_peft_model`` with a ``LoraConfig`` of rank ``lora_r``,
scale ``lora_alpha / lora_r`` and the target modules ``lora_targets`` (per-architecture defaults below: the
attention and MLP projections), then rebuilds the layer stack on the wrapped model (``stack.unwrap`` sees
through it, and its blocks run the LoRA-injected modules). Every base weight is frozen; the shared readout
(final norm + head) stays frozen too unless ``train_readout``, which trains a copy of it through peft's
``modules_to_save`` (saved with the adapters, folded in by ``layerwise merge``). The aligned objectives apply
unchanged: they read every layer through that readout.

A model loaded from a LoRA run folder (``checkpoints.adapters``) continues training its own adapters with
``peft: lora``, or is merged (``merge_and_unload``) and fine-tuned in full without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from layerwise.checkpoints import ModelBundle, make_bundle
from layerwise.checkpoints.adapters import is_peft_model, merged_bundle, require_peft
from layerwise.checkpoints.builtin import BUILTIN
from layerwise.errors import LayerwiseError
from layerwise.models import StackModel
from layerwise.stack.unwrap import unwrap

# Module-name suffixes peft matches (``name == key`` or ``name.endswith("." + key)``), by model class.
_BERT_LIKE = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
DEFAULT_TARGETS: dict[str, list[str]] = {
    "GPT": ["qkv", "attn.proj", "mlp.0", "mlp.2"],  # the project's own GPT (and ViT: the same Block)
    "ViT": ["qkv", "attn.proj", "mlp.0", "mlp.2"],
    "MLP": ["fc"],
    "GPT2LMHeadModel": ["c_attn", "c_proj", "c_fc"],  # Conv1D layers (x @ W: fan_in_fan_out)
    "LlamaForCausalLM": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "MistralForCausalLM": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "Qwen2ForCausalLM": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "BertModel": _BERT_LIKE,
    "BertForSequenceClassification": _BERT_LIKE,
    "ViTForImageClassification": _BERT_LIKE,
    "DeiTForImageClassification": _BERT_LIKE,
}


def default_targets(model: nn.Module) -> list[str]:
    """The attention and MLP projections of ``model``'s architecture (``DEFAULT_TARGETS``)."""
    name = type(unwrap(model)).__name__
    if name not in DEFAULT_TARGETS:
        raise LayerwiseError(f"no default LoRA targets for {name}: name its linear layers with `lora_targets`",
                             option="lora_targets")
    return list(DEFAULT_TARGETS[name])


def readout_module_names(bundle: ModelBundle) -> list[str]:
    """The names (inside the unwrapped model) of the modules the shared readout is built from: its final norm
    and head, or the named layers inside a head the adapter assembled (BERT's pooler + classifier)."""
    base, readout = unwrap(bundle.model), bundle.stack.readout
    names = {id(m): n for n, m in base.named_modules() if n}
    found = []
    for part in (readout.norm, readout.head):
        if part is None:
            continue
        if id(part) in names:
            found.append(names[id(part)])
        else:
            found += [names[id(m)] for m in part.modules() if id(m) in names and any(m.parameters(recurse=False))]
    return found


def base_reference(spec: str) -> str:
    """How a LoRA run folder names its base model: a built-in name as it is, a folder by its absolute path."""
    return spec if spec in BUILTIN else str(Path(spec).resolve())


def apply_peft(bundle: ModelBundle, cfg: Any) -> ModelBundle:
    """``bundle`` wrapped for ``cfg.peft`` (None: unchanged, or merged when it holds adapters already)."""
    from layerwise.training.objectives import get_objective

    if cfg.peft is None:
        if cfg.train_readout:
            raise LayerwiseError("`train_readout` applies to LoRA fine-tuning (`peft`); full fine-tuning trains the "
                                 "readout anyway", option="train_readout")
        return merged_bundle(bundle) if is_peft_model(bundle.model) else bundle
    require_peft("peft")
    if bundle.exit_heads is not None or get_objective(cfg.stage2).exit_heads:
        raise LayerwiseError("LoRA trains through the shared readout: multi-exit heads are not adapters, use an "
                             "objective without exit heads", option="peft")
    if is_peft_model(bundle.model):  # a LoRA run folder: train its own adapters on
        for name, p in bundle.model.named_parameters():
            p.requires_grad_("lora_" in name or "modules_to_save" in name)
        return bundle
    if cfg.model in BUILTIN and isinstance(bundle.model, StackModel):
        raise LayerwiseError(f"{cfg.model} is drawn from the run's seed, so adapters saved for it could "
                             "never find their base again: save the model first (`layerwise train`, `new-gpt`) and "
                             "pass its folder", option="model")
    import peft

    targets = cfg.lora_targets or default_targets(bundle.model)
    base = unwrap(bundle.model)
    config = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0,
                             fan_in_fan_out=type(base).__name__ == "GPT2LMHeadModel",
                             modules_to_save=readout_module_names(bundle) if cfg.train_readout else None)
    try:
        model = peft.get_peft_model(bundle.model, config)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise LayerwiseError(f"LoRA cannot wrap {type(base).__name__}: {' '.join(str(e).split())[:300]}",
                             option="lora_targets") from e
    wrapped = make_bundle(bundle.name, model, bundle.inputs, bundle.stack.feature_pooling)
    wrapped.stack.readout.pooling = bundle.stack.readout.pooling
    wrapped.meta = {**bundle.meta, "peft": {"method": "lora", "base": base_reference(cfg.model), "r": cfg.lora_r,
                                            "alpha": cfg.lora_alpha, "targets": targets,
                                            "train_readout": cfg.train_readout}}
    return wrapped


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor once (tied embeddings)."""
    params = list(dict.fromkeys(model.parameters()))
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
