"""Deprecated: ``layerwise.capture`` moved to ``layerwise.evaluation.capture``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.data.batches': ['to_device'],
 'layerwise.device': ['pick_device'],
 'layerwise.evaluation.capture': ['CapturedBatch', 'capture']})
