"""A train run's predictions.json, and verdicts that bootstrap a task metric (MCC, Pearson) over test samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import SMALL_TRAIN, data_batches, train_config
from layerwise.checkpoints import load_model
from layerwise.reproduce.verdicts import BOOTSTRAP_METHOD, HOLDS, OPEN, T_METHOD, Check, per_seed_value, verdict
from layerwise.training import train


def mcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Matthews correlation of binary labels, (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)), in float64."""
    tp = float(np.sum((pred == 1) & (target == 1)))
    tn = float(np.sum((pred == 0) & (target == 0)))
    fp = float(np.sum((pred == 1) & (target == 0)))
    fn = float(np.sum((pred == 0) & (target == 1)))
    return (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def write_run(folder: Path, predictions: np.ndarray, targets: np.ndarray) -> None:
    folder.mkdir(parents=True)
    (folder / "predictions.json").write_text(json.dumps({"task": "classification", "targets": targets.tolist(),
                                                         "predictions": predictions.tolist()}))


def noisy(targets: np.ndarray, flip: float, layers: int, rng) -> np.ndarray:
    return np.stack([np.where(rng.random(targets.size) < flip, 1 - targets, targets) for _ in range(layers)])


def test_a_trained_runs_predictions_are_its_recorded_accuracy_and_its_own_forward(tmp_path):
    rec = train(train_config(tmp_path, "run", objective="aligned", limit=256))
    saved = json.loads((tmp_path / "run" / "predictions.json").read_text())
    preds, targets = np.asarray(saved["predictions"]), np.asarray(saved["targets"])
    assert preds.shape == (len(rec["accuracy"]), SMALL_TRAIN["eval_limit"])
    assert (preds == targets).mean(axis=1) == pytest.approx(rec["accuracy"], abs=1e-12)  # the Σ-correct path
    bundle = load_model(str(tmp_path / "run"))
    bundle.model.eval()
    batches = data_batches("digits", bundle.inputs, "test", limit=SMALL_TRAIN["eval_limit"])
    with torch.no_grad():
        own = torch.cat([bundle.model(inputs=x["inputs"]).argmax(-1) for x in batches]).numpy()
    assert np.array_equal(preds[-1], own)  # the last layer's readout is the model's own forward
    assert np.array_equal(targets, torch.cat([x["labels"] for x in batches]).numpy())


def test_a_metric_verdict_is_the_mcc_difference_with_a_paired_bootstrap(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random(400) < 0.3).astype(int)
    write_run(tmp_path / "aligned", noisy(targets, 0.1, 4, rng), targets)
    write_run(tmp_path / "standard", noisy(targets, 0.3, 4, rng), targets)
    term = {"key": "predictions", "metric": "mcc", "layers": "1:-1"}
    check = Check(quantity="q", of={"file": "aligned/predictions.json", **term},
                  minus={"file": "standard/predictions.json", **term})
    folders = {"aligned": "aligned", "standard": "standard"}
    value = per_seed_value(check, folders, tmp_path)
    a = np.asarray(json.loads((tmp_path / "aligned/predictions.json").read_text())["predictions"])
    b = np.asarray(json.loads((tmp_path / "standard/predictions.json").read_text())["predictions"])
    expected = np.mean([mcc(a[l], targets) for l in (1, 2)]) - np.mean([mcc(b[l], targets) for l in (1, 2)])
    record = verdict(check, [value])
    assert record["mean"] == pytest.approx(expected, rel=1e-12)
    assert record["method"] == BOOTSTRAP_METHOD and record["verdict"] == HOLDS
    low, high = record["interval"]
    assert low < expected < high and high - low < 0.25
    # the same resampled indices for both terms (the test's own loop, with the verdict's generator and seed)
    draws = np.random.default_rng(0)
    diffs = []
    for _ in range(1000):
        idx = draws.integers(0, 400, size=400)
        diffs.append(np.mean([mcc(a[l][idx], targets[idx]) - mcc(b[l][idx], targets[idx]) for l in (1, 2)]))
    assert (low, high) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    # three seeds: the t interval over the per-seed metric differences instead
    three = verdict(check, [value, value, per_seed_value(check, {"aligned": "standard", "standard": "aligned"},
                                                         tmp_path)])
    assert three["method"] == T_METHOD and three["values"][2] == pytest.approx(-expected, rel=1e-12)


def test_identical_predictions_leave_a_pearson_difference_unresolved(tmp_path):
    rng = np.random.default_rng(1)
    targets = rng.normal(size=300)
    preds = targets + rng.normal(scale=0.5, size=(3, 300))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.json").write_text(json.dumps({"task": "regression",
                                                                      "targets": targets.tolist(),
                                                                      "predictions": preds.tolist()}))
    term = {"key": "predictions", "metric": "pearson"}
    check = Check(quantity="q", of={"file": "a/predictions.json", **term}, minus={"file": "b/predictions.json", **term})
    record = verdict(check, [per_seed_value(check, {}, tmp_path)])
    assert record["interval"] == [0.0, 0.0] and record["verdict"] == OPEN
    alone = Check(quantity="q", of={"file": "a/predictions.json", **term, "layers": "-1"})
    r = verdict(alone, [per_seed_value(alone, {}, tmp_path)])
    assert r["mean"] == pytest.approx(np.corrcoef(preds[-1], targets)[0, 1], rel=1e-12) and r["verdict"] == HOLDS
