"""Deprecated: ``layerwise.evaluate`` moved to ``layerwise.training.losses``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.training.losses': ['lm_targets']})
