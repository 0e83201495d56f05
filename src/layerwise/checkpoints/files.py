"""Reading the files of a model directory, every failure a ``LayerwiseError`` that says what to do."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from layerwise.checkpoints.schemas import check_meta
from layerwise import files
from layerwise.errors import LayerwiseError


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; unreadable or not an object → LayerwiseError."""
    try:
        data = files.read_json(path)
    except LayerwiseError as e:
        raise LayerwiseError(f"{e}; the checkpoint is corrupt: re-save or retrain it") from None
    if not isinstance(data, dict):
        raise LayerwiseError(f"{path} holds a JSON {type(data).__name__}, not an object: re-save the model")
    return data


def read_meta(path: Path) -> dict:
    """``layerwise.json`` of a model directory, checked against its schema ({} when absent)."""
    file = path / "layerwise.json"
    return check_meta(read_json(file), file) if file.exists() else {}


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """``module.load_state_dict(state)``; weights that do not fit the module → LayerwiseError naming ``file``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:  # its first line only says "Error(s) in loading state_dict"; the second says which
        detail = " ".join(" ".join(str(e).splitlines()[:2]).split())
        raise LayerwiseError(f"{file} does not fit the model its folder describes ({detail}): re-save the model") from e


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; missing or corrupt → LayerwiseError."""
    if not path.exists():
        raise LayerwiseError(f"{path} is missing: the model directory is incomplete, re-save it")
    files.check_regular(path, "weights")  # safetensors maps the file: a FIFO or device would block or fail
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types on truncated/garbled files
        raise LayerwiseError(f"{path} is corrupt ({type(e).__name__}): re-save it or resume from another "
                             "checkpoint") from e
