"""Locating real data through a setting, never a fixed path.

An explicit ``data_dir`` argument, else the ``LAYERWISE_DATA`` environment variable, else the first of
``DEFAULT_DATA_DIRS`` (relative to the working directory) that holds the requested file. Decoded caches
go under ``LAYERWISE_CACHE`` (default ``~/.cache/layerwise``).
"""

from __future__ import annotations

import os
from pathlib import Path

from layerwise.errors import LayerwiseError

DATA_ENV = "LAYERWISE_DATA"
CACHE_ENV = "LAYERWISE_CACHE"
DEFAULT_DATA_DIRS = ("./data", "../shared/data")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "layerwise")


def find_data(relpath: str, data_dir: str | Path | None = None) -> Path:
    """Path of ``relpath`` under the data root given by ``data_dir``, ``LAYERWISE_DATA`` or the defaults."""
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        setting, option = ("`data_dir`", "data_dir") if data_dir is not None else (DATA_ENV, None)
        if not root.is_dir():
            raise LayerwiseError(f"data directory {root} not found: fix {setting} to point at the data root",
                                 option=option)
        if not (root / relpath).exists():
            raise LayerwiseError(f"{root / relpath} not found: fix {setting} to point at the data root that holds "
                                 f"{relpath}", option=option)
        return root / relpath
    for root in map(Path, DEFAULT_DATA_DIRS):
        if (root / relpath).exists():
            return root / relpath
    searched = ", ".join(DEFAULT_DATA_DIRS)
    raise LayerwiseError(f"{relpath} not found in {searched}: set {DATA_ENV} or pass `data_dir` to the data root",
                         option="data_dir")
