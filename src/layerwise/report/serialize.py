"""Files the tool writes: JSON with NaN as null, and atomic writes (temporary file, then rename)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file


def jsonable(x: Any, digits: int | None = None) -> Any:
    """numpy/torch → lists; NaN/Inf → None (JSON has no NaN, and a silent NaN is a bug); paths → str;
    floats rounded to ``digits`` decimals when given."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return x if digits is None else round(x, digits)
    if isinstance(x, dict):
        return {str(k): jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, digits) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file in the same directory, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results and reports from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(obj: Any, path: Path, digits: int | None = None) -> None:
    """``obj`` as indented JSON (NaN → null), written atomically; creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(jsonable(obj, digits), indent=2, allow_nan=False), path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written atomically (contiguous, de-aliased CPU copies)."""
    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, tmp, metadata=metadata))


def save_beside_model(folder: Path, tensors: tuple[str, dict[str, torch.Tensor]], meta: tuple[str, dict],
                      what: str, overwrite: bool = False) -> list[Path]:
    """A safetensors file and its JSON written beside a model, each atomically; ``what`` (e.g. "an exit
    classifier") already there is replaced only with ``overwrite``. Returns the two paths."""
    from layerwise.errors import LayerwiseError

    folder = Path(folder)
    paths = [folder / tensors[0], folder / meta[0]]
    if not overwrite and any(p.exists() for p in paths):
        raise LayerwiseError(f"{folder} already holds {what}: pass `overwrite` to replace it", option="overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(tensors[1], paths[0])
    write_json(meta[1], paths[1])
    return paths


def load_beside_model(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors ``keys`` of a safetensors file beside a model (``save_beside_model``), read as untrusted data:
    a regular file of bounded size, a valid safetensors file holding those keys, else one ``LayerwiseError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from layerwise.errors import LayerwiseError
    from layerwise.files import check_regular

    check_regular(path, "weights")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LayerwiseError(f"{path} is not a readable safetensors file ({e}): write it again") from e
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise LayerwiseError(f"{path} lacks {', '.join(missing)}: write it again")
    return tensors


def warning_messages(caught) -> list[str]:
    """Our own warnings (undefined layers, subsampling), once each; third-party chatter is dropped."""
    seen: list[str] = []
    for w in caught:
        if "layerwise" not in str(w.filename):
            continue
        msg = str(w.message).splitlines()[0]
        if msg not in seen:
            seen.append(msg)
    return seen
