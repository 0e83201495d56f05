"""Deprecated: ``layerwise.evaluate`` moved to ``layerwise.evaluation.per_layer``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.evaluation.per_layer': ['lm_targets']})
