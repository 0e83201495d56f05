"""Wall-clock timing on the same batches and device, for the measured speedup t(plain) / t(runner)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from layerwise.data.batches import Batch, model_inputs
from layerwise.device import synchronize


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return median_seconds(fn, repeats)[0]


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median seconds over ``repeats`` calls, the last call's result); no warm-up."""
    times, result = [], None
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        result = fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall-clock seconds of each function over ``repeats``, after one warm-up call each; the functions
    alternate within every repeat, so a shared machine's drifting load falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            synchronize()
            t0 = time.perf_counter()
            fn()
            synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def plain_forward(model: nn.Module, batches: Sequence[Batch]) -> Callable[[], None]:
    """The baseline: the wrapped model's own forward over all batches."""

    @torch.inference_mode()
    def run() -> None:
        for b in batches:
            model(**model_inputs(b))

    return run
