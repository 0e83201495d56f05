"""What ``layerwise exit`` reports for one model: per-layer accuracy, the exit histogram at τ, both speedups,
a threshold sweep, the ε-calibrated threshold and what it gives on the test split, and the minimal depth."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from layerwise.checkpoints import ModelBundle
from layerwise.data.batches import Batch, labels_of
from layerwise.evaluation.depth import minimal_depth
from layerwise.evaluation.metrics import layer_task_metrics
from layerwise.evaluation.per_layer import layer_logits
from layerwise.inference import (
    EarlyExitRunner,
    ExitPolicy,
    accuracy,
    calibrate,
    calibration_grid,
    layer_speedup,
    median_seconds,
    plain_forward,
    timed,
)


def evaluate_model(bundle: ModelBundle, policy: ExitPolicy, test: list[Batch], val: list[Batch] | None, *,
                   eps: float, delta: float, thresholds: Sequence[float] | None, repeats: int = 1,
                   metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything ``layerwise exit`` reports for one model on pre-materialised batches; ``metrics`` (the task's,
    its own first: F1, Matthews correlation, …) are reported per layer beside the accuracy.

    Wall-clock speedup = t(the model's own forward) / t(runner), same batches and device, median of
    ``repeats``; layer-count speedup = Σ L·mᵢ / Σ i·mᵢ.
    """
    stack, heads = bundle.stack, bundle.exit_heads
    runner = EarlyExitRunner(stack, policy, heads)
    L = stack.num_layers
    labels = labels_of(test)
    logits = layer_logits(stack, test, heads)
    per_layer = [accuracy(x.argmax(-1), labels) for x in logits]
    t_full = timed(plain_forward(bundle.model, test), repeats)

    def point(p: ExitPolicy) -> dict[str, Any]:
        r = EarlyExitRunner(stack, p, heads)
        t, result = median_seconds(lambda: r.run(test), repeats)  # the plain-forward timing warmed up
        hist = result.histogram(L)
        return {"threshold": p.threshold, "accuracy": accuracy(result.prediction, labels), "histogram": hist,
                "layer_speedup": layer_speedup(hist), "wall_speedup": t_full / t, "seconds": t}

    main = point(policy)
    # Default sweep: deciles of the observed scores (fits weak and strong models alike), safest last.
    grid = thresholds or [round(t, 4) for t in calibration_grid(policy, logits, 11)][::-1]
    sweep = [point(policy.with_threshold(t)) for t in grid]
    report: dict[str, Any] = {
        "name": bundle.name, "num_layers": L, "samples": len(labels), "policy": policy.name,
        "exit_heads": heads is not None, "full_accuracy": per_layer[-1], "full_seconds": t_full,
        **{k: main[k] for k in ("threshold", "accuracy", "layer_speedup", "wall_speedup", "seconds")},
        "accuracy_drop": per_layer[-1] - main["accuracy"], "exit_histogram": main["histogram"],
        "per_layer_accuracy": per_layer, "minimal_depth": {"delta": delta, "k": minimal_depth(per_layer, delta)},
        "sweep": sweep,
        "metric": (metrics or ("accuracy",))[0],
        "per_layer_metrics": layer_task_metrics(torch.stack([x.argmax(-1) for x in logits]).numpy(), labels.numpy(),
                                                metrics or ("accuracy",)),
    }
    if val is not None:
        cal = calibrate(policy, layer_logits(stack, val, heads), labels_of(val), eps,
                        runner.lo, runner.hi)
        at = point(policy.with_threshold(cal["threshold"]))
        report["calibration"] = {"eps": eps, **cal, "test_accuracy": at["accuracy"],
                                 "test_accuracy_drop": per_layer[-1] - at["accuracy"],
                                 "test_layer_speedup": at["layer_speedup"], "test_wall_speedup": at["wall_speedup"],
                                 "test_histogram": at["histogram"]}
    return report
