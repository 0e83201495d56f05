"""Deprecated: ``layerwise.hf_trainer`` moved to ``layerwise.training.hf_trainer``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.training.hf_trainer': ['AlignedTrainer', 'hf_objectives']})
