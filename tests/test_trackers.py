"""Experiment trackers (``log_with``): per-layer metrics per epoch and the configuration reach TensorBoard and
MLflow, read back offline with their own readers (TensorBoard's event accumulator, MLflow's client on the local
file store) and checked against the run's ``log.jsonl``."""

from __future__ import annotations

import json

import pytest
from fixtures import run_cli, train_config, train_flags

from layerwise.errors import LayerwiseError
from layerwise.training import train
from layerwise.training.log import layer_scalars, tracker_names

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_logs_per_layer_metrics_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = train_config(tmp_path, epochs=2, log_with="tensorboard,mlflow")
    train(cfg)
    out = tmp_path / "run"
    log = records(out)
    assert [r["epoch"] for r in log] == [1, 2]
    layers = len(log[-1]["accuracy"])
    assert layers >= 3

    scalars = tensorboard_scalars(out / "trackers" / "layerwise-train")
    for layer in range(layers):
        tag = f"eval/accuracy/layer_{layer:02d}"
        assert [s for s, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([r["accuracy"][layer] for r in log], abs=1e-6)
    assert [v for _, v in scalars["train/train_loss"]] == pytest.approx([r["train_loss"] for r in log], rel=1e-6)

    client = MlflowClient(tracking_uri=(out / "trackers" / "mlruns").resolve().as_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "layerwise-train"]
    [mlrun] = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED"
    history = client.get_metric_history(mlrun.info.run_id, "eval/loss/layer_01")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["loss"][1], rel=1e-6)) for r in log]
    params = mlrun.data.params
    assert params["objective"] == cfg.objective and float(params["lr"]) == cfg.lr
    assert params["batch_size"] == str(cfg.batch_size)


def test_missing_tracker_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    code, out, err = run_cli(monkeypatch, capsys, *train_flags(tmp_path / "run", log_with="wandb"))
    assert code == 2 and err.count("\n") == 1 and "layerwise[trackers]" in err and "--log-with" in err
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(LayerwiseError, match="unknown tracker 'neptune'"):
        tracker_names("neptune")


def test_layer_scalars_names_each_layer():
    record = {"accuracy": [0.5, 0.75, 1.0], "exit_a": [0.25, 0.5], "grid": [1, 2, 3, 4], "n": 3, "name": "x",
              "flag": True, "depth": {"k": 2}}
    assert layer_scalars(record, num_layers=2) == {
        "eval/accuracy/layer_00": 0.5, "eval/accuracy/layer_01": 0.75, "eval/accuracy/layer_02": 1.0,
        "eval/exit_a/layer_01": 0.25, "eval/exit_a/layer_02": 0.5, "eval/n": 3.0, "eval/depth/k": 2.0}


def test_analyze_logs_its_per_layer_table_and_figures(tmp_path, monkeypatch):
    """``analyze --log-with tensorboard``: every number of layers.csv as a scalar named by layer, and the
    figures as images."""
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from layerwise.commands.analyze import AnalyzeOptions, run

    out = tmp_path / "a"
    run(AnalyzeOptions(model="mlp-residual", data="digits", limit=120, measures="cka_linear,cos", device="cpu",
                       probe=False, out=out, log_with="tensorboard"))
    scalars = tensorboard_scalars(out / "trackers" / "layerwise-analyze")
    rows = list(csv.DictReader((out / "layers.csv").open()))
    checked = 0
    for row in rows:
        for key in ("cka_linear_to_last", "cos_to_last", "accuracy"):
            [(step, value)] = scalars[f"analyze/{key}/layer_{int(row['layer']):02d}"]
            assert value == pytest.approx(float(row[key]), abs=1e-6)
            checked += 1
    assert checked == 3 * len(rows) and len(rows) >= 3
    events = EventAccumulator(str(out / "trackers" / "layerwise-analyze"), size_guidance={"images": 0})
    events.Reload()
    assert "figures/heatmap_cka_linear" in events.Tags()["images"]


def test_reproduce_passes_trackers_to_the_steps_that_log(monkeypatch, tmp_path):
    """``reproduce --log-with X`` adds ``--log-with X`` to its train, lpft, analyze and exit steps only."""
    from layerwise.reproduce import all_recipes, runner

    calls = []
    monkeypatch.setattr(runner.subprocess, "call", lambda argv, env: calls.append(argv) or 0)
    steps = {s.command: s for r in all_recipes() for s in r.steps}
    for command in ("train", "analyze", "connect"):
        runner.run_step(steps[command], "cpu", tmp_path, {}, "tensorboard")
    train, analyze, connect = calls
    assert train[train.index("train"):][-2:] == ["--log-with", "tensorboard"]
    assert analyze[-2:] == ["--log-with", "tensorboard"]
    assert "--log-with" not in connect
