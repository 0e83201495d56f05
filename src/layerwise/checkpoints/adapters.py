"""LoRA run folders: the adapters in PEFT's own format beside a reference to the base model.

A folder written by ``layerwise train --peft lora`` holds ``adapter_config.json`` and
``adapter_model.safetensors`` (``PeftModel.save_pretrained``), the tokenizer's files, and ``layerwise.json``
whose ``peft`` entry names the base model (a built-in name or an absolute folder path) and the LoRA settings.
``load_model`` loads the base, then ``PeftModel.from_pretrained`` on it, so every command that takes a model
takes such a folder (adapters unmerged: ``layerwise merge`` folds them in, ``merged_bundle``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from torch import nn

from layerwise.checkpoints.bundle import ModelBundle, make_bundle
from layerwise.checkpoints.files import read_meta
from layerwise.data.spec import input_spec_from_meta
from layerwise.errors import LayerwiseError
from layerwise.files import check_regular
from layerwise.stack.unwrap import is_peft_model, unwrap

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def require_peft(option: str | None = None) -> None:
    """peft importable, or one line naming the extra that installs it."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise LayerwiseError("LoRA needs the peft library: pip install 'layerwise[peft]'", option=option) from None


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").exists()


def load_adapter_dir(path: Path, num_classes: int | None, load: Callable[..., ModelBundle]) -> ModelBundle:
    """The base model named in ``layerwise.json`` (loaded by ``load``) with the folder's adapters on it."""
    meta = read_meta(path)
    info = meta.get("peft")
    if not info:
        raise LayerwiseError(f"{path} holds adapters but its layerwise.json names no base model: retrain it "
                             "with LoRA (`peft` lora)")
    for name in ADAPTER_FILES:
        if not (path / name).exists():
            raise LayerwiseError(f"{path / name} is missing: the adapter folder is incomplete, retrain it")
        check_regular(path / name, "weights")
    require_peft()
    from peft import PeftModel

    base = info["base"]
    if base not in _builtin() and not Path(base).is_dir():
        raise LayerwiseError(f"the base model of {path}, {base}, is not found: put it back at that path")
    bundle = load(base, num_classes=num_classes)
    try:
        model = PeftModel.from_pretrained(bundle.model, str(path))
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise LayerwiseError(f"the adapters in {path} do not fit their base model {base} "
                             f"({' '.join(str(e).split())[:200]}): retrain them") from e
    model.eval()
    out = make_bundle(str(path), model, input_spec_from_meta(meta, bundle.inputs),
                      meta.get("feature_pooling") or bundle.stack.feature_pooling)
    out.stack.readout.pooling = bundle.stack.readout.pooling
    out.meta = meta
    return out


def _builtin() -> dict:
    from layerwise.checkpoints.builtin import BUILTIN

    return BUILTIN


def save_adapters(model: nn.Module, out: Path) -> None:
    """``save_pretrained`` into a temporary folder outside ``out``, then only the adapter files copied into
    ``out``, each atomically (peft also writes a model card, which is not the tool's to leave in a run folder)."""
    from layerwise.report.serialize import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in ADAPTER_FILES:
            atomic_write(out / name, lambda dest, src=Path(tmp, name): shutil.copyfile(src, dest))


def merged_bundle(bundle: ModelBundle) -> ModelBundle:
    """The adapters folded into the base weights (peft's ``merge_and_unload``): a plain model, its stack rebuilt.
    A trained copy of a tied head (``train_readout``) no longer shares the embedding: the tie is dropped."""
    model = bundle.model.merge_and_unload()
    base = unwrap(model)
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else getattr(base, "tok", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else getattr(base, "head", None)
    config = getattr(base, "config", None)
    if embedding is not None and head is not None and head.weight is not embedding.weight and getattr(
            config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
    out = make_bundle(bundle.name, model, bundle.inputs, bundle.stack.feature_pooling)
    out.stack.readout.pooling = bundle.stack.readout.pooling
    out.meta = {k: v for k, v in bundle.meta.items() if k != "peft"}
    out.exit_heads = bundle.exit_heads
    return out
