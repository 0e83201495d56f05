"""Deprecated: ``layerwise.transfer`` moved to ``layerwise.evaluation.transfer``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.evaluation.transfer': ['layerwise_accuracy', 'shift_accuracy', 'readout_inputs',
                                   'transfer_accuracy']})
