"""Verdicts of the paper's claims: the quantity a claim rests on, per seed, its mean and 95 % interval.

A recipe declares each quantity as data (``Check``): a term read from a results file of one step, minus an
optional second term, reduced over a slice of layers, with the sign the claim expects:

    verdicts:
      - quantity: aligned − standard mean accuracy, layers 1..L−1
        of: {file: analyze-aligned/results.json, key: accuracy, layers: "1:-1"}
        minus: {file: analyze-standard/results.json, key: accuracy, layers: "1:-1"}
        expect: positive

``key`` is a dotted path (``models.1.per_layer_accuracy``; integers index lists). The value there is a number,
a list (reduced by its mean over ``layers``, a Python slice), or, with ``samples: true``, one row per test
sample (each row reduced over ``layers``), which allows a bootstrap over test samples when there is one seed.
With ``metric`` (accuracy, f1, mcc, pearson, spearman) the value is a train run's ``predictions.json``
(``key: predictions``, one row per layer, ``targets`` beside it): the term is the metric per layer, averaged
over ``layers``, and a metric that is no mean over samples (MCC, Pearson) can still be bootstrapped.

Interval: with n ≥ 2 seeds the Student-t interval over the per-seed values (unless every seed gave the same
value, a quantity the seeds do not reach: then as with one seed); with one seed and per-sample or
``metric`` terms a seeded percentile bootstrap over test samples (paired: every term is recomputed on the same
resampled samples); otherwise none.
Verdict: "holds" when the interval lies wholly on the claimed side of 0, "does not hold" when it lies wholly on
the other side, else "not resolved at this budget".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from layerwise.errors import LayerwiseError
from layerwise.files import read_json
from layerwise.schema import Options

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved at this budget"
T_METHOD, BOOTSTRAP_METHOD = "t over seeds", "bootstrap over test samples"


class Term(Options):
    """One number per seed (or one per test sample) read from a step's results file."""

    file: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*/[^/].*$")  # <step>/<file>, relative to the step's folder
    key: str = Field(min_length=1)
    layers: str | None = None  # a slice over the last axis, e.g. "1:-1" (layers 1..L−1 of 0..L); None: all
    samples: bool = False  # the value is one row per test sample
    metric: Literal["accuracy", "f1", "mcc", "pearson", "spearman"] | None = None  # of predictions vs ``targets``

    @property
    def step(self) -> str:
        return self.file.split("/", 1)[0]


class Check(Options):
    """A claim's quantity: ``of`` minus ``minus`` (if given), expected positive or negative; a list of terms
    stands for their mean (e.g. over several corruptions)."""

    quantity: str
    of: Term | list[Term]
    minus: Term | list[Term] | None = None
    expect: Literal["positive", "negative"] = "positive"

    def terms(self) -> list[Term]:
        return [t for part in (self.of, self.minus) for t in (part if isinstance(part, list) else [part])
                if t is not None]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): mean ± t_{(1+c)/2, n−1} · s / √n, s the sample standard deviation (ddof 1), n ≥ 2."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError("a t interval needs at least two values")
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def bootstrap_interval(samples: Sequence[float], *, seed: int = 0, resamples: int = 2000,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean and the percentile bootstrap interval of the mean — ``resamples``
    draws of n indices with replacement (``numpy.random.default_rng(seed)``), the (1 ∓ c)/2 quantiles of
    their means (Efron & Tibshirani 1993, ch. 13)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        raise ValueError("a bootstrap needs at least two samples")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(x.mean()), float(low), float(high)


class SampleStatistic:
    """A quantity recomputable on any resample of the test samples: ``stat(idx)`` for an index array, with
    ``float(stat)`` its value on all ``n`` samples (a task metric, which is no mean of per-sample values)."""

    def __init__(self, n: int, fn):
        self.n, self.fn = n, fn

    def __call__(self, idx: np.ndarray) -> float:
        return float(self.fn(idx))

    def __float__(self) -> float:
        return self(np.arange(self.n))

    def combine(self, other: "SampleStatistic", op) -> "SampleStatistic":
        if other.n != self.n:
            raise LayerwiseError(f"two verdict terms score {self.n} and {other.n} samples; pair terms over the "
                                 "same test samples")
        return SampleStatistic(self.n, lambda idx: op(self(idx), other(idx)))


def metric_statistic(predictions: np.ndarray, targets: np.ndarray, metric: str) -> SampleStatistic:
    """mean over the rows ℓ of ``metric``(predictions[ℓ, idx], targets[idx]) (``data.metrics.task_metric``)."""
    from layerwise.data.metrics import task_metric

    return SampleStatistic(targets.size, lambda idx: np.mean([task_metric(metric, row[idx], targets[idx])
                                                              for row in predictions]))


def bootstrap_statistic(stat: SampleStatistic, *, seed: int = 0, resamples: int = 1000,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): ``stat`` on all samples and the percentile bootstrap interval of ``stat`` over
    ``resamples`` draws of n sample indices with replacement (the paired bootstrap of a difference of metrics)."""
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, stat.n, size=stat.n)) for _ in range(resamples)])
    draws = draws[np.isfinite(draws)]
    if draws.size < resamples // 2:  # e.g. a constant prediction: the correlation is undefined
        return float(stat), math.nan, math.nan
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(stat), float(low), float(high)


def decide(interval: Sequence[float] | None, expect: str = "positive") -> str:
    """The verdict of an interval [low, high] for a claim that the quantity is ``expect`` (positive/negative)."""
    if interval is None or any(v is None or not math.isfinite(v) for v in interval):
        return OPEN
    low, high = (interval[0], interval[1]) if expect == "positive" else (-interval[1], -interval[0])
    return HOLDS if low > 0 else FAILS if high < 0 else OPEN


def layer_slice(text: str | None) -> slice:
    """``"1:-1"`` → slice(1, -1); None → every layer."""
    if text is None:
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) == 1:
            i = int(parts[0])
            return slice(i, i + 1 if i != -1 else None)
        if len(parts) in (2, 3):
            return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        pass
    raise LayerwiseError(f"layers {text!r}: pass a Python slice of layers such as 1:-1, -1 or 0:3")


def lookup(data: Any, key: str, source: str) -> Any:
    """The value at a dotted ``key`` (integers index lists) in parsed JSON."""
    value = data
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise LayerwiseError(f"{source} has no {key!r} (stopped at {part!r}): fix the recipe's verdict key")
    return value


def reduce_term(value: Any, term: Term, source: str) -> float | np.ndarray:
    """A number, the mean of a list over ``layers``, or (``samples``) one such mean per row."""
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise LayerwiseError(f"{source} {term.key!r} is not numbers: fix the recipe's verdict key") from None
    if term.samples:
        if x.ndim not in (1, 2):
            raise LayerwiseError(f"{source} {term.key!r} is not one row per sample: drop `samples`")
        return x if x.ndim == 1 else x[:, layer_slice(term.layers)].mean(axis=1)
    if x.ndim == 0:
        return float(x)
    picked = x.reshape(-1) if term.layers is None else x[..., layer_slice(term.layers)].reshape(-1)
    if picked.size == 0:
        raise LayerwiseError(f"{source} {term.key!r}: layers {term.layers!r} select nothing")
    return float(picked.mean())


def read_term(term: Term, folder_of: dict[str, str], out: Path) -> float | np.ndarray | SampleStatistic:
    """The term in one seed's folders (``folder_of``: step name → its folder for this seed); NaN where the
    results hold null."""
    rel = folder_of.get(term.step, term.step) + "/" + term.file.split("/", 1)[1]
    path = out / rel
    if not path.is_file():
        raise LayerwiseError(f"{path} is missing: the verdict reads it (did step {term.step!r} finish?)")
    data = read_json(path, kind="json")
    value = lookup(data, term.key, rel)
    if term.metric is not None:
        try:
            predictions = np.asarray(value, dtype=np.float64)[layer_slice(term.layers)]
            targets = np.asarray(lookup(data, "targets", rel), dtype=np.float64)
        except (TypeError, ValueError):
            raise LayerwiseError(f"{rel} {term.key!r}: not rows of predictions with their targets") from None
        if predictions.ndim != 2 or predictions.shape[1] != targets.size or not predictions.size:
            raise LayerwiseError(f"{rel} {term.key!r}: not one row of {targets.size} predictions per layer")
        return metric_statistic(predictions, targets, term.metric)
    if value is None:
        return math.nan
    if isinstance(value, list):
        value = [math.nan if v is None else v for v in value]
    return reduce_term(value, term, rel)


def read_part(part: Term | list[Term], folder_of: dict[str, str], out: Path) -> float | np.ndarray | SampleStatistic:
    """A term, or the mean of a list of terms (element-wise for per-sample ones of one size)."""
    if not isinstance(part, list):
        return read_term(part, folder_of, out)
    values = [read_term(t, folder_of, out) for t in part]
    if any(isinstance(v, SampleStatistic) for v in values):
        if not all(isinstance(v, SampleStatistic) for v in values):
            raise LayerwiseError("a list of verdict terms mixes `metric` terms with others: give each `metric`")
        total = values[0]
        for v in values[1:]:
            total = total.combine(v, lambda a, b: a + b)
        return SampleStatistic(total.n, lambda idx: total(idx) / len(values))
    if len({np.shape(v) for v in values}) > 1:
        values = [float(np.mean(v)) for v in values]
    return np.mean(values, axis=0) if isinstance(values[0], np.ndarray) else float(np.mean(values))


def per_seed_value(check: Check, folder_of: dict[str, str], out: Path) -> float | np.ndarray | SampleStatistic:
    """``of − minus`` in one seed's folders: a number, one value per test sample where both terms are, or a
    ``SampleStatistic`` where both are ``metric`` terms."""
    a = read_part(check.of, folder_of, out)
    if check.minus is None:
        return a
    b = read_part(check.minus, folder_of, out)
    if isinstance(a, SampleStatistic) and isinstance(b, SampleStatistic):
        return a.combine(b, lambda x, y: x - y)
    if isinstance(a, SampleStatistic) or isinstance(b, SampleStatistic):
        a, b = float(a) if isinstance(a, SampleStatistic) else a, float(b) if isinstance(b, SampleStatistic) else b
    if isinstance(a, np.ndarray) != isinstance(b, np.ndarray):  # one per sample, one scalar: compare means
        a, b = (float(np.mean(a)), float(np.mean(b)))
    elif isinstance(a, np.ndarray) and a.shape != b.shape:
        raise LayerwiseError(f"verdict {check.quantity!r}: its two terms score {a.size} and {b.size} samples; "
                             "pair terms over the same test samples")
    return a - b


def verdict(check: Check, values: Sequence[float | np.ndarray | SampleStatistic], seed: int = 0) -> dict[str, Any]:
    """The ``Verdict`` record of one check from its per-seed values (``layerwise.report.schemas.Verdict``)."""
    means = [float(v) if isinstance(v, SampleStatistic) else float(np.mean(v)) for v in values]
    finite = all(math.isfinite(m) for m in means)
    record: dict[str, Any] = {"quantity": check.quantity, "expect": check.expect,
                              "values": [m if math.isfinite(m) else None for m in means],
                              "mean": float(np.mean(means)) if finite and means else None,
                              "interval": None, "method": None}
    if finite and len(values) >= 2 and len(set(means)) == 1:
        # Every seed gave the same value: the seeds do not reach this quantity (a pretrained model on fixed
        # data), so a t interval would be a point; what varies is the test sample, as with one seed.
        values = values[:1]
    if finite and len(values) >= 2:
        _, low, high = t_interval(means)
        record.update(interval=[low, high], method=T_METHOD)
    elif finite and len(values) == 1 and isinstance(values[0], np.ndarray) and values[0].size >= 2:
        mean, low, high = bootstrap_interval(values[0], seed=seed)
        record.update(mean=mean, interval=[low, high], method=BOOTSTRAP_METHOD)
    elif finite and len(values) == 1 and isinstance(values[0], SampleStatistic) and values[0].n >= 2:
        _, low, high = bootstrap_statistic(values[0], seed=seed)
        if math.isfinite(low):
            record.update(interval=[low, high], method=BOOTSTRAP_METHOD)
    record["verdict"] = decide(record["interval"], check.expect)
    return record


__all__ = ["BOOTSTRAP_METHOD", "Check", "FAILS", "HOLDS", "OPEN", "SampleStatistic", "T_METHOD", "Term",
           "bootstrap_interval", "bootstrap_statistic", "decide", "metric_statistic", "layer_slice", "lookup", "per_seed_value", "reduce_term", "t_interval", "verdict"]
