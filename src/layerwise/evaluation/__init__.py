"""Evaluation layer by layer: capture every layer, the one per-layer scoring loop, similarity analysis,
early-exit reports, transfer and shift, minimal depth, generated text scored per layer, layer-wise linear mode
connectivity (``connectivity``: the mathematics; ``connect``: the orchestration, imported from its module), and the
LP-FT diagnostics (``ntk``: the eNTK's head and backbone parts; ``calibration``; ``feature_change`` against a
pretrained copy)."""

from layerwise.evaluation.analysis import analyze, compare, layer_measures
from layerwise.evaluation.capture import CapturedBatch, capture
from layerwise.evaluation.depth import minimal_depth
from layerwise.evaluation.exits import evaluate_model
from layerwise.evaluation.gen_eval import evaluate_generation
from layerwise.evaluation.per_layer import (
    LayerScores,
    dense_ce,
    evaluate_layers,
    layer_logits,
    layer_losses,
    layer_sums,
    lm_targets,
    readout_targets,
)
from layerwise.evaluation.transfer import layerwise_accuracy, readout_inputs, transfer_accuracy

__all__ = [
    "CapturedBatch",
    "LayerScores",
    "analyze",
    "capture",
    "compare",
    "dense_ce",
    "evaluate_generation",
    "evaluate_layers",
    "evaluate_model",
    "layer_logits",
    "layer_losses",
    "layer_measures",
    "layer_sums",
    "layerwise_accuracy",
    "lm_targets",
    "minimal_depth",
    "readout_inputs",
    "readout_targets",
    "transfer_accuracy",
]
