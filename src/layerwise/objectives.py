"""Deprecated: ``layerwise.objectives`` moved to ``layerwise.training.objectives``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.training.objectives': ['OBJECTIVES', 'layer_weights', 'dense_ce', 'layer_ce',
                                   'standard', 'aligned', 'cosine_gap', 'cos_reg', 'phase']})
