"""Deprecated: ``layerwise.residual`` moved to ``layerwise.measures.residual``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.measures.residual': ['ResidualStats']})
