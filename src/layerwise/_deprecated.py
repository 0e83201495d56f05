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
