"""Evaluation layer by layer, the scoring core: capture every layer (``capture``), per-layer scoring for
evaluation (``per_layer``; the loss and the sums it shares with training are ``training.losses`` and
``training.scores``), similarity analysis (``analysis``), probing and NC1 (``probing``), transfer and shift
(``transfer``), minimal depth (``depth``), calibration (``calibration``), prompts from a corpus (``prompts``) and
scores of generated text (``generation_metrics``), layer-wise linear mode connectivity (``connectivity``), and
LP-FT's mathematics (``lpft``: the eNTK, feature change, head norms). The commands that run them are
``layerwise.commands``."""

from layerwise.evaluation.analysis import analyze, compare, layer_measures
from layerwise.evaluation.capture import CapturedBatch, capture
from layerwise.evaluation.depth import minimal_depth
from layerwise.evaluation.per_layer import LayerScores, layer_logits, output_sums
from layerwise.evaluation.transfer import layerwise_accuracy, readout_inputs, transfer_accuracy

__all__ = [
    "CapturedBatch",
    "LayerScores",
    "analyze",
    "capture",
    "compare",
    "layer_logits",
    "layer_measures",
    "layerwise_accuracy",
    "minimal_depth",
    "output_sums",
    "readout_inputs",
    "transfer_accuracy",
]
