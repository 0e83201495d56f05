"""`layerwise exit` and `layerwise truncate` end to end, and their bad-input exits (code 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import subprocess_env

from layerwise.checkpoints import load_model, make_exit_heads, save_model


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise.cli", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def strict_json(path: Path) -> dict:
    def no_nan(name: str):
        raise AssertionError(f"{name} in JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A (random) mlp-residual saved plain and with multi-exit heads."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    bundle = load_model("mlp-residual", num_classes=10)
    plain = save_model(bundle, root / "plain")
    bundle.exit_heads = make_exit_heads(bundle.stack)
    return {"plain": plain, "multi": save_model(bundle, root / "multi")}


def test_exit_report(tmp_path, models):
    out = tmp_path / "exit"
    r = cli("exit", "--model", str(models["plain"]), "--model", str(models["multi"]), "--data", "digits",
            "--limit", "160", "--threshold", "0.2", "--batch-size", "32", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = strict_json(out / "results.json")
    assert (out / "exit_histogram.png").stat().st_size > 0 and (out / "sweep.png").stat().st_size > 0
    assert [m["exit_heads"] for m in res["models"]] == [False, True]
    for m in res["models"]:
        L = m["num_layers"]
        assert sum(m["exit_histogram"]) == m["samples"] == 80  # half held out for calibration
        hist = m["exit_histogram"]
        assert m["layer_speedup"] == pytest.approx(L * sum(hist) / sum(i * c for i, c in enumerate(hist, 1)))
        assert m["wall_speedup"] > 0 and m["full_seconds"] > 0
        assert len(m["per_layer_accuracy"]) == L and 1 <= m["minimal_depth"]["k"] <= L
        assert m["full_accuracy"] == m["per_layer_accuracy"][-1]
        assert len(m["sweep"]) > 3 and all({"accuracy", "layer_speedup", "wall_speedup"} <= set(p) for p in m["sweep"])
        cal = m["calibration"]
        assert cal["val_full_accuracy"] - cal["val_accuracy"] <= 0.01 + 1e-9
        assert {"test_accuracy", "test_layer_speedup", "test_wall_speedup"} <= set(cal)
    never = [p for p in res["models"][0]["sweep"] if p["threshold"] == 1.0][0]
    assert never["layer_speedup"] == 1.0  # τ = 1: nobody exits early


def test_truncate_command(tmp_path, models):
    r = cli("truncate", "--model", str(models["plain"]), "--k", "3", "--out", str(tmp_path / "cut"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_model(str(tmp_path / "cut")).stack.num_layers == 3


@pytest.mark.parametrize("args,message", [
    (("exit", "--model", "mlp-residual", "--data", "digits", "--threshold", "1.5"), "threshold 1.5 out of range"),
    (("exit", "--model", "mlp-residual", "--data", "digits", "--policy", "patience", "--threshold", "9"),
     "k=9 > 8 layers"),
    (("exit", "--model", "gpt-tiny", "--data", "digits"), "needs a classifier"),
    (("exit", "--model", "mlp-residual", "--data", "digits", "--limit", "0"), "--limit: Input should be greater"),
    (("exit", "--model", "mlp-residual", "--data", "digits", "--min-layer", "5", "--max-layer", "2"),
     "min_layer=5 > max_layer=2"),
    (("truncate", "--model", "mlp-residual", "--k", "9", "--out", "cut"), "k=9 out of range"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, args, message):
    r = cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path) if args[0] == "exit" else cli(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
