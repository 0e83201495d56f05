"""``load_model(spec)``: a built-in name, a model directory, or (online) a Hugging Face hub name."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from layerwise.checkpoints.adapters import is_adapter_dir, load_adapter_dir
from layerwise.checkpoints.builtin import BUILTIN
from layerwise.checkpoints.bundle import ModelBundle, make_bundle, set_readout_pooling
from layerwise.checkpoints.files import load_state, read_json, read_meta, read_tensors
from layerwise.checkpoints.hf import load_hf_dir, load_hub
from layerwise.checkpoints.schemas import check_own_config
from layerwise.checkpoints.tokenizers import check_fits, folder_tokenizer
from layerwise.data.spec import InputSpec, image_spec, input_spec_from_meta
from layerwise.errors import LayerwiseError
from layerwise.models import StackModel, ViT, build_own
from layerwise.stack import make_exit_heads


def load_model(spec: str, num_classes: int | None = None) -> ModelBundle:
    """Load a model by short name, directory or hub name; ``num_classes`` adds/resizes a classifier head."""
    if spec in BUILTIN:
        return BUILTIN[spec][1](spec, num_classes)
    path = Path(spec)
    if path.is_dir():
        if is_adapter_dir(path):  # a LoRA run: its base model with the folder's adapters on it
            return load_adapter_dir(path, num_classes, load_model)
        if not (path / "config.json").exists():
            raise LayerwiseError(f"{path} has no config.json: pass a directory written by `layerwise train` "
                                 "or save_pretrained")
        config = read_json(path / "config.json")
        bundle = _load_own_dir(path, config) if "layerwise_arch" in config else load_hf_dir(path, spec, num_classes)
        if bundle.meta.get("readout_pooling") and bundle.stack.task in ("classification", "regression"):
            set_readout_pooling(bundle, bundle.meta["readout_pooling"])
        _load_exit_heads(bundle, path)
        check_fits(bundle.inputs.tokenizer, bundle.model, path)
        return bundle
    if path.suffix or os.sep in spec or spec.startswith("."):
        raise LayerwiseError(f"model path {spec} not found: pass an existing directory or one of "
                             f"{', '.join(BUILTIN)}")
    return load_hub(spec, num_classes)


def _own_default_inputs(model: StackModel, arch: str, path: Path) -> InputSpec:
    if isinstance(model, ViT):
        return image_spec(model.config.image_size, model.config.channels)
    if arch == "gpt":
        return InputSpec(modality="tokens", tokenizer=folder_tokenizer(path))
    return InputSpec(modality="vector", input_dim=model.config.input_dim)


def _build_own(config: dict, file: Path) -> StackModel:
    """The own model a validated ``config.json`` describes; values its modules reject → LayerwiseError."""
    try:
        return build_own(config)
    except (ValueError, RuntimeError) as e:  # e.g. a negative width: torch refuses the tensor shape
        raise LayerwiseError(f"{file} describes no buildable model ({str(e).splitlines()[0]}): fix its values "
                             "or re-save the model") from e


def _load_own_dir(path: Path, config: dict) -> ModelBundle:
    config, meta = check_own_config(config, path / "config.json"), read_meta(path)  # checked before any weights
    model = _build_own(config, path / "config.json")
    state = read_tensors(path / "model.safetensors")
    if "head.weight" not in state and "tok.weight" in state and hasattr(model, "tok"):
        state["head.weight"] = state["tok.weight"]  # tied weights are stored once
    elif "head.weight" in state and hasattr(model, "tok"):  # an untied head (a merged LoRA readout copy)
        model.head.weight = torch.nn.Parameter(torch.empty_like(model.tok.weight))
    load_state(model, state, path / "model.safetensors")
    inputs = input_spec_from_meta(meta, _own_default_inputs(model, config["layerwise_arch"], path))
    bundle = make_bundle(str(path), model, inputs, meta.get("feature_pooling"))
    bundle.meta = meta
    return bundle


def _load_exit_heads(bundle: ModelBundle, path: Path) -> None:
    if not bundle.meta.get("exit_heads"):
        return
    heads = make_exit_heads(bundle.stack)
    load_state(heads, read_tensors(path / "exit_heads.safetensors"), path / "exit_heads.safetensors")
    bundle.exit_heads = heads
