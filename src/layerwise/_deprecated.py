"""Old import paths (before the package was organised by concern), kept importing for one release."""

from __future__ import annotations

import importlib
import sys
import warnings


def reexport(old: str, sources: dict[str, list[str]]) -> None:
    """Make module ``old`` expose ``names`` from each new module, with a DeprecationWarning on import."""
    new = ", ".join(sources)
    warnings.warn(f"{old} is deprecated and will be removed in the next release: import from {new}",
                  DeprecationWarning, stacklevel=3)
    module = sys.modules[old]
    for source, names in sources.items():
        target = importlib.import_module(source)
        for name in names:
            setattr(module, name, getattr(target, name))


def moved_names(package: str, names: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) for names that left ``package``: ``names[old] = "new.module:attr"``.
    Each use warns once per call site and returns the object from its new home."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = names[name].partition(":")
        warnings.warn(f"{package}.{name} is deprecated and will be removed in the next release: use {module}.{attr}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)

    return __getattr__
