"""Task metrics as GLUE defines them, from scikit-learn and SciPy: accuracy, F1 of the positive class (MRPC,
QQP), Matthews correlation (CoLA), Pearson and Spearman correlations (STS-B). A task names its metrics, its
own first (``LayerwiseDataset.metrics``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from layerwise.errors import LayerwiseError


def _correlation(fn: Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, target: np.ndarray) -> float:
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
            return float("nan")  # undefined for a constant prediction (e.g. an untrained layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(fn(pred, target)[0])

    return metric


def _sklearn(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, target: np.ndarray) -> float:
        from sklearn import metrics as M

        if name == "accuracy":
            return float(M.accuracy_score(target, pred))
        if name == "f1":
            return float(M.f1_score(target, pred, pos_label=1, average="binary", zero_division=0.0))
        return float(M.matthews_corrcoef(target, pred))

    return metric


def _scipy(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from scipy import stats

    return _correlation(stats.pearsonr if name == "pearson" else stats.spearmanr)


CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def task_metric(name: str, pred: np.ndarray, target: np.ndarray) -> float:
    """One metric of predictions against targets: class ids for accuracy/f1/mcc, real values for
    pearson/spearman (NaN where a correlation is undefined)."""
    if name in CLASSIFICATION_METRICS:
        return _sklearn(name)(np.asarray(pred), np.asarray(target))
    if name in REGRESSION_METRICS:
        return _scipy(name)(np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64))
    raise LayerwiseError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}")


def layer_task_metrics(preds: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> dict[str, list[float]]:
    """``names`` → per-row metric of ``preds`` (rows, N) against ``targets`` (N,)."""
    return {name: [task_metric(name, row, targets) for row in preds] for name in names}
