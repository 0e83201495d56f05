"""Where computation runs."""

from __future__ import annotations

import torch

from layerwise.errors import LayerwiseError


def pick_device(device: str) -> torch.device:
    """auto → cuda when a GPU is present, else cpu; asking for cuda without one is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LayerwiseError(f"device {device} requested but no GPU is available: use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise LayerwiseError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from e


def synchronize() -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
