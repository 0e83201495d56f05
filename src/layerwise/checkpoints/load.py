"""``load_model(spec)``: a built-in name, a model directory, or (online) a Hugging Face hub name."""

from __future__ import annotations

import os
import tempfile
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


def load_model(spec: str, num_classes: int | None = None, *, device_map: str | dict | None = None,
               offload_folder: str | Path | None = None, dtype: torch.dtype | None = None,
               init_seed: int | None = None) -> ModelBundle:
    """Load a model by short name, directory or hub name; ``num_classes`` adds/resizes a classifier head.

    ``device_map`` (auto | balanced | a JSON file | a dict of module → device) places the blocks across devices,
    CPU memory and disk (``checkpoints.dispatch``; ``offload_folder`` holds what goes to disk), loaded in
    ``dtype`` (default: as saved); the stack then carries each state to its block's device. ``init_seed``: the
    seed of an untrained own built-in's weights (``checkpoints.builtin``; default: a fixed seed per name)."""
    if device_map is not None:
        return _load_placed(spec, num_classes, device_map, offload_folder, dtype)
    if spec in BUILTIN:
        return BUILTIN[spec][1](spec, num_classes, init_seed)
    path = Path(spec)
    if path.is_dir():
        if is_adapter_dir(path):  # a LoRA run: its base model with the folder's adapters on it
            return load_adapter_dir(path, num_classes, load_model)
        if not (path / "config.json").exists():
            raise LayerwiseError(f"{path} has no config.json: pass a directory written by `layerwise train` "
                                 "or save_pretrained")
        config = read_json(path / "config.json")
        bundle = _load_own_dir(path, config) if "layerwise_arch" in config else load_hf_dir(path, spec, num_classes)
        return _finish_dir(path, bundle)
    if path.suffix or os.sep in spec or spec.startswith("."):
        raise LayerwiseError(f"model path {spec} not found: pass an existing directory or one of "
                             f"{', '.join(BUILTIN)}")
    return load_hub(spec, num_classes)


def _load_placed(spec: str, num_classes: int | None, device_map: str | dict, offload_folder: str | Path | None,
                 dtype: torch.dtype | None) -> ModelBundle:
    """``load_model`` with a device map: Hugging Face folders through ``from_pretrained(device_map=…)``, the
    others loaded, cast, then dispatched (``dispatch_model``)."""
    from layerwise.checkpoints.dispatch import check_device_map, dispatch, read_device_map

    placement = read_device_map(device_map) if isinstance(device_map, str) else device_map
    path = Path(spec)
    folder = path.is_dir() and (path / "config.json").exists()
    if spec not in BUILTIN and (folder and "layerwise_arch" not in read_json(path / "config.json")
                                or not path.is_dir() and not (path.suffix or os.sep in spec)):
        args = {"device_map": placement, "dtype": dtype,
                "offload_folder": str(offload_folder or tempfile.mkdtemp(prefix="layerwise-offload-"))}
        if folder:
            bundle = _finish_dir(path, load_hf_dir(path, spec, num_classes, args))
        else:
            bundle = load_hub(spec, num_classes, args)
        check_device_map(bundle.model, bundle.stack.blocks, getattr(bundle.model, "hf_device_map", {"": "cpu"}))
    else:
        bundle = load_model(spec, num_classes)
        if dtype is not None:
            bundle.model.to(dtype)
        dispatch(bundle.model, bundle.stack.blocks, placement, offload_folder)
    bundle.stack.carry_devices()
    return bundle


def _finish_dir(path: Path, bundle: ModelBundle) -> ModelBundle:
    """What ``load_model`` does after loading a folder: the readout pooling, exit heads, the tokenizer check."""
    if bundle.meta.get("readout_pooling") and bundle.stack.task in ("classification", "regression"):
        set_readout_pooling(bundle, bundle.meta["readout_pooling"])
    _load_exit_heads(bundle, path)
    check_fits(bundle.inputs.tokenizer, bundle.model, path)
    return bundle


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
