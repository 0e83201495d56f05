"""Deprecated: ``layerwise.analysis`` moved to ``layerwise.evaluation.analysis``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.evaluation.analysis': ['layer_measures', 'FeatureStore', 'pooled_features'],
 'layerwise.measures': ['parse_measures']})
