"""Deprecated: ``layerwise.early_exit`` moved to ``layerwise.inference``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.data': ['materialize', 'model_inputs'],
 'layerwise.evaluation': ['layer_logits'],
 'layerwise.inference': ['ExitResult', 'EarlyExitRunner', 'layer_speedup', 'simulate', 'calibrate',
                         'calibration_grid', 'timed', 'plain_forward']})
