"""Where computation runs."""

from __future__ import annotations

import re

import torch

from layerwise.errors import LayerwiseError

_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def _available(kind: str, index: int) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if kind == "mps":
        return index == 0 and torch.backends.mps.is_available()
    return index == 0


def pick_device(device: str) -> torch.device:
    """auto → cuda when a GPU is present, else cpu; otherwise cpu, cuda[:N] or mps, which must be present.

    Other strings torch accepts (``meta``, ``xla``, ``cpu:3``…) would fail later, mid-run, or compute nothing.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE.fullmatch(device)
    if match is None:
        raise LayerwiseError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    kind, index = match[1], int((match[2] or ":0")[1:])
    if not _available(kind, index):
        raise LayerwiseError(f"device {device} requested but it is not available here: use cpu or auto")
    return torch.device(device)


def synchronize() -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
