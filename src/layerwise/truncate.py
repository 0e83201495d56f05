"""Deprecated: ``layerwise.truncate`` moved to ``layerwise.checkpoints``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.checkpoints': ['truncate'],
 'layerwise.evaluation': ['minimal_depth']})
