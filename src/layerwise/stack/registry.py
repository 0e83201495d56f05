"""The adapter registry: the only place that maps a model class to its stack parts.

To support a new architecture, write a function ``model -> StackParts`` and register it:

    @register_adapter("my-arch", lambda m: type(m).__name__ == "MyModel")
    def my_arch(model): return StackParts(embed=..., blocks=..., readout=Readout(norm, head, "cls"), ...)

Hugging Face models are embedded by running the model's own forward up to its first block and
capturing that block's inputs (hidden states, attention mask, rotary position embeddings, …) with a
pre-hook (``hooked_embed``), so masks and positions are built exactly as the model builds them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.stack.state import StackParts, StackState


@dataclass(frozen=True)
class Adapter:
    name: str
    matches: Callable[[nn.Module], bool]
    parts: Callable[[nn.Module], StackParts]


ADAPTERS: list[Adapter] = []


def register_adapter(name: str, matches: Callable[[nn.Module], bool]):
    """Decorator: register ``parts(model) -> StackParts`` for models where ``matches(model)`` is true."""

    def wrap(parts: Callable[[nn.Module], StackParts]) -> Callable[[nn.Module], StackParts]:
        ADAPTERS.insert(0, Adapter(name, matches, parts))  # later registrations take precedence
        return parts

    return wrap


def find_adapter(model: nn.Module) -> Adapter:
    """The most recently registered adapter that matches ``model``."""
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter
    names = ", ".join(supported_architectures())
    raise LayerwiseError(
        f"unsupported architecture {type(model).__name__}: supported are {names}; "
        "add one with layerwise.stack.register_adapter (see docs/architecture.md)"
    )


def supported_architectures() -> list[str]:
    return sorted(a.name for a in ADAPTERS)


def block_list(body: nn.Module, count: int) -> nn.ModuleList:
    """The one ``ModuleList`` of ``count`` blocks inside ``body``, found by structure rather than by attribute path,
    since releases move it (ViT: ``vit.encoder.layer`` up to transformers 4.x, ``vit.layers`` from 5.0)."""
    found = [m for m in body.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if len(found) != 1:
        raise LayerwiseError(f"{type(body).__name__}: expected one list of {count} blocks, found {len(found)}")
    return found[0]


def is_class(*class_names: str) -> Callable[[nn.Module], bool]:
    """A matcher on the model's class name (no import of the model's library needed)."""
    return lambda m: type(m).__name__ in class_names


class _StopForward(Exception):
    pass


CACHE_PARAMETERS = ("cache", "past_key_values")  # a model forward's name for its key/value cache, newest first


def cache_parameter(forward: Callable) -> str | None:
    """The name under which ``forward`` takes a key/value cache, read from its signature (transformers renamed
    ``past_key_values`` to ``cache`` in 5.x and warns on the old name), or None when it takes none."""
    parameters = inspect.signature(forward).parameters
    return next((name for name in CACHE_PARAMETERS if name in parameters), None)


def hooked_embed(model: nn.Module, first_block: nn.Module, **call_kwargs) -> Callable[[dict, Any], StackState]:
    """Embed by running ``model`` until ``first_block`` and capturing its inputs.

    A cache given to ``embed`` reaches the model under the name its forward declares (read once, here), so the
    model builds positions and masks past the cached length and hands the cache to its blocks in its own form.
    """
    cache_name = cache_parameter(model.forward)

    def embed(inputs: dict[str, Tensor], cache: Any = None) -> StackState:
        captured: dict = {}

        def hook(module, args, kwargs):
            captured["args"], captured["kwargs"] = args, dict(kwargs)
            raise _StopForward

        extra = {}
        if cache is not None:
            if cache_name is None:
                raise LayerwiseError(f"{type(model).__name__}.forward takes no key/value cache")
            extra = {cache_name: cache, "use_cache": True}
        handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            model(**{**call_kwargs, **inputs, **extra})
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise LayerwiseError(f"{type(model).__name__} never reached its first block; check the inputs")
        args, kwargs = captured["args"], captured["kwargs"]
        h, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        return StackState(h=h, mask=inputs.get("attention_mask"), block_args=rest, block_kwargs=kwargs, cache=cache)

    return embed
