"""``InputSpec``: what a model consumes. Immutable, so a model's spec can be shared and never leaks changes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from layerwise.data.tokenizer import ByteTokenizer
from layerwise.errors import LayerwiseError

Modality = Literal["image", "text", "vector", "tokens"]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)



@dataclass(frozen=True)
class InputSpec:
    """What a model consumes; built by ``layerwise.checkpoints`` and read by ``make_loader``.

    Frozen: derive a changed copy with ``dataclasses.replace(spec, max_length=...)``.
    """

    modality: Modality
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tokenizer: Any | None = None
    max_length: int = 128
    input_dim: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in ("image", "text", "vector", "tokens"):
            raise LayerwiseError(f"unknown modality {self.modality!r}: use image, text, vector or tokens")


def image_spec(size: int, channels: int, mean: tuple[float, ...] = CIFAR_MEAN,
               std: tuple[float, ...] = CIFAR_STD) -> InputSpec:
    """Square images of ``size`` pixels, normalised per channel: (x − mean) / std."""
    return InputSpec(modality="image", image_size=size, channels=channels, mean=tuple(mean), std=tuple(std))


def input_spec_from_meta(meta: dict, default: InputSpec) -> InputSpec:
    """The spec saved in a model directory's ``layerwise.json`` (``inputs``), else ``default``.

    The tokenizer is not serialised: "byte" means ``ByteTokenizer``, anything else the default's.
    """
    saved = meta.get("inputs")
    if not saved:
        return default
    tokenizer = ByteTokenizer() if saved.get("tokenizer") == "byte" else default.tokenizer
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    return replace(default, **{**fields, "tokenizer": tokenizer})
