"""Serving with one classifier and many exits: exit policies, the compacting runner, simulation from
precomputed logits with threshold calibration, and wall-clock timing."""

from layerwise.inference.policies import (
    POLICIES,
    ConfidencePolicy,
    Decision,
    EntropyPolicy,
    ExitPolicy,
    PatiencePolicy,
    entropy,
    make_policy,
    register_policy,
)
from layerwise.inference.runner import EarlyExitRunner, ExitResult, FirstExit, layer_speedup
from layerwise.inference.simulate import accuracy, calibrate, calibration_grid, layer_scores, simulate
from layerwise.inference.timing import interleaved, median_seconds, plain_forward, timed

__all__ = [
    "POLICIES",
    "ConfidencePolicy",
    "Decision",
    "EarlyExitRunner",
    "EntropyPolicy",
    "ExitPolicy",
    "ExitResult",
    "FirstExit",
    "PatiencePolicy",
    "accuracy",
    "calibrate",
    "calibration_grid",
    "layer_scores",
    "entropy",
    "interleaved",
    "layer_speedup",
    "make_policy",
    "median_seconds",
    "register_policy",
    "plain_forward",
    "simulate",
    "timed",
]
