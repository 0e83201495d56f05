"""Serving with one classifier and many exits: exit policies, the compacting runner, simulation from
precomputed logits with threshold calibration, and wall-clock timing."""

from layerwise.inference.policies import (
    POLICIES,
    ConfidencePolicy,
    Decision,
    EntropyPolicy,
    ExitPolicy,
    PatiencePolicy,
    make_policy,
)
from layerwise.inference.runner import EarlyExitRunner, ExitResult, FirstExit, layer_speedup
from layerwise.inference.simulate import accuracy, calibrate, calibration_grid, simulate
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
    "interleaved",
    "layer_speedup",
    "make_policy",
    "median_seconds",
    "plain_forward",
    "simulate",
    "timed",
]
