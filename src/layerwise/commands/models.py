"""``models``: the built-in model names and the supported architectures (writes nothing)."""

from __future__ import annotations

from layerwise.commands.common import CommandOptions

OUTPUTS: tuple[str, ...] = ()  # writes nothing


class ModelsOptions(CommandOptions):
    """``models`` takes no options."""


def run(options: ModelsOptions | None = None) -> dict[str, dict[str, str] | list[str]]:
    """``{"models": {name: description}, "architectures": [...]}``."""
    from layerwise.checkpoints import describe_models
    from layerwise.stack import supported_architectures

    return {"models": describe_models(), "architectures": list(supported_architectures())}
