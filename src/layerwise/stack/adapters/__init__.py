"""One file per model family; importing this package registers them all (``layerwise.stack.registry``)."""

from layerwise.stack.adapters import bert, decoders, own, vision  # noqa: F401  (registration)
