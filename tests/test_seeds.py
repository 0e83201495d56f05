"""``reproduce --seeds``: every seeded step once per seed, the claims' quantities per seed, their 95 % interval
and the verdict rule."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from layerwise.errors import LayerwiseError
from layerwise.report.schemas import ReproduceRecord, Verdict
from layerwise.reproduce import all_recipes, read_recipe, reproduce
from layerwise.reproduce.verdicts import (BOOTSTRAP_METHOD, FAILS, HOLDS, OPEN, T_METHOD, Check, bootstrap_interval,
                                          decide, layer_slice, t_interval, verdict)
from layerwise.schema import validate


@pytest.mark.parametrize("values", [[0.01, 0.03, 0.02], [1.5, -0.5], [0.2, 0.25, 0.1, 0.3, 0.22, 0.18]])
def test_t_interval_is_the_student_t_formula(values):
    x = [float(v) for v in values]
    n = len(x)
    mean = math.fsum(x) / n
    s = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    got = t_interval(values)
    assert got == pytest.approx((mean, mean - half, mean + half), rel=1e-12, abs=1e-15)


def test_t_interval_needs_two_values():
    with pytest.raises(ValueError):
        t_interval([0.3])


def test_bootstrap_matches_the_normal_theory_interval_and_replays_its_seed():
    """For 4,000 normal samples the percentile bootstrap of the mean is close to mean ± 1.96·s/√n."""
    x = np.random.default_rng(7).normal(0.3, 2.0, 4000)
    mean, low, high = bootstrap_interval(x, seed=3, resamples=4000)
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(x.size)
    assert mean == pytest.approx(x.mean(), rel=1e-12)
    assert low == pytest.approx(mean - half, rel=0.1) and high == pytest.approx(mean + half, rel=0.1)
    assert high - low == pytest.approx(2 * half, rel=0.08)
    assert bootstrap_interval(x, seed=3, resamples=4000) == (mean, low, high)
    assert bootstrap_interval(x, seed=4, resamples=4000) != (mean, low, high)


@pytest.mark.parametrize("interval, expect, answer", [
    ([0.01, 0.05], "positive", HOLDS), ([-0.05, -0.01], "positive", FAILS), ([-0.01, 0.05], "positive", OPEN),
    ([0.0, 0.05], "positive", OPEN), ([-0.05, -0.01], "negative", HOLDS), ([0.01, 0.05], "negative", FAILS),
    (None, "positive", OPEN), ([float("nan"), 1.0], "positive", OPEN), ([None, 1.0], "positive", OPEN)])
def test_the_verdict_holds_only_when_the_interval_excludes_the_opposite(interval, expect, answer):
    assert decide(interval, expect) == answer


def test_layer_slices():
    assert list(range(7))[layer_slice("1:-1")] == [1, 2, 3, 4, 5]
    assert list(range(7))[layer_slice("-1")] == [6] and list(range(7))[layer_slice("-2")] == [5]
    assert list(range(7))[layer_slice(None)] == list(range(7))
    with pytest.raises(LayerwiseError, match="slice"):
        layer_slice("a:b")


def test_one_seed_with_per_sample_values_is_bootstrapped_and_without_them_unresolved():
    check = Check(quantity="q", of={"file": "a/results.json", "key": "k"})
    one = verdict(check, [0.2])
    assert one["interval"] is None and one["verdict"] == OPEN and one["mean"] == 0.2
    samples = np.random.default_rng(0).normal(0.5, 0.1, 200)
    boot = verdict(check, [samples])
    assert boot["method"] == BOOTSTRAP_METHOD and boot["verdict"] == HOLDS
    assert boot["mean"] == pytest.approx(samples.mean())
    validate(Verdict, boot, "verdict")


def test_every_packaged_recipe_declares_its_claims_and_enough_seeds():
    """Three seeds (or more) for every figure of under 15 CPU minutes a seed; every recipe names a quantity."""
    for recipe in all_recipes():
        assert recipe.verdicts, recipe.figure
        if recipe.minutes["cpu"] < 15:
            assert recipe.seed_count("cpu") >= 3, recipe.figure


# ------------------------------------------------------------------ the runner, with the processes faked

ACCURACY = {  # (step, seed) → per-layer accuracy 0..3 the fake process writes
    ("analyze-a", 0): [0.1, 0.5, 0.6, 0.9], ("analyze-a", 1): [0.1, 0.55, 0.62, 0.9],
    ("analyze-a", 2): [0.1, 0.45, 0.7, 0.91],
    ("analyze-b", 0): [0.1, 0.3, 0.4, 0.9], ("analyze-b", 1): [0.1, 0.35, 0.5, 0.88],
    ("analyze-b", 2): [0.1, 0.2, 0.45, 0.92]}


def _recipe(tmp_path: Path, **extra) -> Path:
    steps = [{"name": "a", "command": "train", "args": {"model": "mlp-plain", "seed": 5}},
             {"name": "b", "command": "train", "args": {"model": "mlp-plain", "seed": 5, "objective": "aligned"}},
             {"name": "shared", "command": "analyze", "args": {"model": "minilm", "data": "sst2"}},
             {"name": "analyze-a", "command": "analyze", "args": {"model": "@a", "seed": 0}},
             {"name": "analyze-b", "command": "analyze", "args": {"model": "@b", "seed": 0}}]
    check = {"quantity": "a − b inner accuracy", "of": {"file": "analyze-a/results.json", "key": "accuracy",
                                                          "layers": "1:-1"},
             "minus": {"file": "analyze-b/results.json", "key": "accuracy", "layers": "1:-1"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"figure": "t", "title": "t", "claim": "c", "minutes": {"cpu": 1, "gpu": 1},
                                    "steps": steps, "verdicts": [check], **extra}))
    return path


def _fake_processes(monkeypatch, calls: list):
    def call(argv, env):
        args = argv[3:]
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        calls.append(args)
        seed = int(args[args.index("--seed") + 1]) if "--seed" in args else None
        if args[0] == "analyze" and out.name.startswith("analyze"):
            step = out.name.split("-s")[0]
            (out / "results.json").write_text(json.dumps({"accuracy": ACCURACY[(step, seed)]}))
        return 0

    monkeypatch.setattr(subprocess, "call", call)


def test_seeds_run_each_seeded_step_per_seed_into_its_own_folder(tmp_path, monkeypatch):
    calls: list = []
    _fake_processes(monkeypatch, calls)
    recipe = read_recipe(_recipe(tmp_path))
    out = tmp_path / "out"
    entry = reproduce(recipe, "cpu", out, seeds=3, echo=lambda _: None)
    folders = [a[a.index("--out") + 1] for a in calls]
    assert [Path(f).name for f in folders] == ["a", "b", "shared", "analyze-a", "analyze-b",
                                               "a-s1", "b-s1", "analyze-a-s1", "analyze-b-s1",
                                               "a-s2", "b-s2", "analyze-a-s2", "analyze-b-s2"]
    by_folder = {Path(a[a.index("--out") + 1]).name: a for a in calls}
    assert by_folder["a-s2"][by_folder["a-s2"].index("--seed") + 1] == "7"  # the recipe's seed 5, offset by 2
    assert by_folder["analyze-a-s1"][by_folder["analyze-a-s1"].index("--model") + 1] == str(out / "a-s1")
    assert by_folder["analyze-b"][by_folder["analyze-b"].index("--model") + 1] == str(out / "b")

    diffs = [np.mean(ACCURACY[("analyze-a", k)][1:3]) - np.mean(ACCURACY[("analyze-b", k)][1:3]) for k in range(3)]
    mean, s = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = stats.t.ppf(0.975, 2) * s / math.sqrt(3)
    (record,) = entry["verdicts"]
    assert record["values"] == pytest.approx(diffs) and record["mean"] == pytest.approx(mean)
    assert record["interval"] == pytest.approx([mean - half, mean + half]) and record["method"] == T_METHOD
    assert record["verdict"] == (HOLDS if mean - half > 0 else OPEN)
    saved = json.loads((out / "reproduce.json").read_text())
    validate(ReproduceRecord, saved, "reproduce.json")
    assert saved["figures"]["t"]["seeds"] == 3 and saved["figures"]["t"]["verdicts"][0]["values"] == record["values"]

    calls.clear()  # resuming: every (step, seed) is done; a fourth seed runs only its own steps
    reproduce(recipe, "cpu", out, seeds=3, echo=lambda _: None)
    assert calls == []
    ACCURACY.update({("analyze-a", 3): [0, 0.5, 0.5, 1], ("analyze-b", 3): [0, 0.5, 0.5, 1]})
    again = reproduce(recipe, "cpu", out, seeds=4, echo=lambda _: None)
    assert [Path(a[a.index("--out") + 1]).name for a in calls] == ["a-s3", "b-s3", "analyze-a-s3", "analyze-b-s3"]
    assert len(again["verdicts"][0]["values"]) == 4


def test_a_recipe_plot_draws_the_mean_over_seeds_with_its_t_band(tmp_path, monkeypatch):
    from layerwise.reproduce.plots import band

    _fake_processes(monkeypatch, [])
    line = {"file": "analyze-a/results.json", "key": "accuracy", "label": "a"}
    plot = {"file": "fig-t.png", "title": "t", "panels": [{"title": "p", "lines": [line, {**line, "label": "b",
                                                                                         "file": "analyze-b/results.json"}]}]}
    path = _recipe(tmp_path, plots=[plot], shows=["fig-t.png"])
    entry = reproduce(read_recipe(path), "cpu", tmp_path / "out", seeds=3, echo=lambda _: None)
    assert entry["plots"] == ["fig-t.png"] and not entry["warnings"]
    assert (tmp_path / "out" / "fig-t.png").read_bytes().startswith(b"\x89PNG")
    rows = np.array([ACCURACY[("analyze-a", k)] for k in range(3)])
    mean, half = band(rows)
    for j in range(rows.shape[1]):
        col = rows[:, j]
        s = math.sqrt(sum((v - col.mean()) ** 2 for v in col) / 2)
        assert mean[j] == pytest.approx(col.mean()) and half[j] == pytest.approx(stats.t.ppf(0.975, 2) * s / math.sqrt(3))
    assert band(rows[:1])[1] is None


def test_a_verdict_that_cannot_be_read_is_unresolved_with_a_warning(tmp_path, monkeypatch):
    _fake_processes(monkeypatch, [])
    raw = yaml.safe_load(_recipe(tmp_path).read_text())
    raw["verdicts"][0]["of"]["key"] = "nope"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    entry = reproduce(read_recipe(path), "cpu", tmp_path / "out", seeds=2, echo=lambda _: None)
    assert entry["verdicts"][0]["verdict"] == OPEN and "nope" in entry["warnings"][0]


def test_seed_folders_that_clash_with_a_step_are_refused(tmp_path):
    raw = yaml.safe_load(_recipe(tmp_path).read_text())
    raw["steps"].append({"name": "a-s1", "command": "train", "args": {"model": "mlp-plain"}})
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LayerwiseError, match="'a-s1'"):
        reproduce(read_recipe(path), "cpu", tmp_path / "out", seeds=2, echo=lambda _: None)


def test_a_verdict_reading_no_step_is_a_recipe_error(tmp_path):
    raw = yaml.safe_load(_recipe(tmp_path).read_text())
    raw["verdicts"][0]["minus"]["file"] = "missing/results.json"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(LayerwiseError, match="'missing' is no step"):
        read_recipe(path)


def test_zero_seeds_is_one_line_exit_2():
    result = subprocess.run([sys.executable, "-m", "layerwise.cli", "reproduce", "11", "--seeds", "0"],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                                 "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "--seeds: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_seeds_that_do_not_move_the_quantity_fall_back_to_the_bootstrap_over_samples():
    """A pretrained model on fixed data gives the same value in every seed: a t interval of width 0 would
    claim certainty it does not have, so the test samples are resampled instead (or no interval at all)."""
    check = Check(quantity="q", of={"file": "a/results.json", "key": "k", "samples": True})
    samples = np.random.default_rng(0).normal(0.02, 0.5, 300)
    record = verdict(check, [samples, samples.copy(), samples.copy()])
    x = samples.astype(np.float64)
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(x.size)  # normal theory, the bootstrap's large-n limit
    assert record["method"] == BOOTSTRAP_METHOD and record["values"] == [pytest.approx(x.mean())] * 3
    assert record["interval"][1] - record["interval"][0] == pytest.approx(2 * half, rel=0.15)
    assert record["verdict"] == OPEN  # 0.02 ± 0.057
    scalar = verdict(Check(quantity="q", of={"file": "a/results.json", "key": "k"}), [0.3, 0.3, 0.3])
    assert scalar["interval"] is None and scalar["verdict"] == OPEN


def test_an_explicit_data_seed_moves_with_the_seed():
    """connect's shared-initialisation pair: `seed` 0 vs `seed` 0 with `data_seed` 1 differ in data order at
    seed 0; without the offset, seed k = 1 would pair `seed` 1 (data order 1) with `seed` 1, `data_seed` 1: one model."""
    from layerwise.reproduce.recipe import Step
    from layerwise.reproduce.runner import seed_step

    plain = Step(name="a", command="train", args={"seed": 0})
    other_order = Step(name="b", command="train", args={"seed": 0, "data_seed": 1})
    for k in range(4):
        a, b = seed_step(plain, k, "cpu", {"a", "b"}).args, seed_step(other_order, k, "cpu", {"a", "b"}).args
        assert (a["seed"], b["seed"], b["data_seed"]) == (k, k, 1 + k)
        assert "data_seed" not in a  # train's default data seed is its seed, k: b's differs at every k
