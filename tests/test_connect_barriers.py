"""``connect``'s two barriers (issue 24, item 4) against float64 formulas written here: for every path of every
mode, the maximum over α and the midpoint (α = ½) of ℒ(θ(α)) − ((1 − α)·ℒ₀ + α·ℒ₁), with the line's ends the
two whole models (``baseline`` models, ℒ₀ = ℒ(θ_A) and ℒ₁ = ℒ(θ_B) from the models' own forward passes) or the
path's own ends (``baseline`` path); a single-layer midpoint against the model with that layer averaged by hand."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixtures import run_cli
from layerwise.checkpoints import make_bundle, save_model
from layerwise.commands.connect import ConnectOptions, run
from layerwise.data import InputSpec, load_dataset, make_loader, materialize
from layerwise.errors import LayerwiseError
from layerwise.evaluation.connectivity import connect
from layerwise.models import MLP, MLPConfig
from layerwise.stack.surgery import stack_groups

VECTOR = InputSpec(modality="vector", input_dim=64)
MODES = ["full", "single", "cumulative", "random"]


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(MLPConfig(dim=16, depth=3)).double().eval()


@pytest.fixture(scope="module")
def pair():
    """Two float64 MLPs from different initialisations and 40 digits in float64."""
    batches = materialize(make_loader(load_dataset("digits", "test", limit=40), VECTOR, 16), "cpu")
    batches = [{k: v.double() if v.is_floating_point() else v for k, v in b.items()} for b in batches]
    return _mlp(0), _mlp(1), batches


def _own_loss(model: nn.Module, batches) -> float:
    logits = torch.cat([model(inputs=b["inputs"]) for b in batches])
    return F.cross_entropy(logits, torch.cat([b["labels"] for b in batches])).item()


def _variants(modes: dict):
    for mode, m in modes.items():
        yield mode, m
        yield from ((f"{mode}.{k}", v) for k, v in m.items() if isinstance(v, dict) and "loss" in v)


def _expected(alphas, curve, ends, baseline: str) -> tuple[float, float]:
    """(max over α, value at ½) of curve − line in float64, the line through ``ends`` or the curve's own ends;
    ½ off the grid: the excess interpolated linearly between its neighbours, written out."""
    a, c = np.asarray(alphas, np.float64), np.asarray(curve, np.float64)
    lo, hi = (c[0], c[-1]) if baseline == "path" else ends
    e = c - ((1.0 - a) * lo + a * hi)
    if 0.5 in list(alphas):
        mid = e[list(alphas).index(0.5)]
    else:
        k = int(np.searchsorted(a, 0.5))
        mid = e[k - 1] + (0.5 - a[k - 1]) / (a[k] - a[k - 1]) * (e[k] - e[k - 1])
    return float(e.max()), float(mid)


@pytest.mark.parametrize("baseline,alphas", [("models", [0.0, 0.25, 0.5, 0.75, 1.0]),
                                             ("path", [0.0, 0.25, 0.5, 0.75, 1.0]),
                                             ("models", [0.0, 0.4, 0.7, 1.0]),
                                             ("path", [0.0, 0.3, 0.6, 1.0])])
def test_both_barriers_of_every_mode_against_the_formula(pair, baseline, alphas):
    a, b, batches = pair
    res = connect(make_bundle("a", a, VECTOR), make_bundle("b", b, VECTOR), batches, modes=MODES, alphas=alphas,
                  random_seeds=1, baseline=baseline, progress=False)
    assert res["baseline"] == baseline and res["midpoint_interpolated"] == (0.5 not in alphas)
    ends = (_own_loss(a, batches), _own_loss(b, batches))
    assert (res["endpoints"]["loss_a"], res["endpoints"]["loss_b"]) == pytest.approx(ends, rel=1e-6)
    seen, differ = 0, 0
    for name, v in _variants(res["modes"]):
        for i, curve in enumerate(v["loss"]):
            top, mid = _expected(alphas, curve, ends, baseline)
            assert v["barrier_loss"][i] == pytest.approx(top, rel=1e-9, abs=1e-6), (name, i)
            assert v["midpoint_barrier_loss"][i] == pytest.approx(mid, rel=1e-9, abs=1e-6), (name, i)
            e_top, e_mid = _expected(alphas, v["error"][i], (res["endpoints"]["error_a"],
                                                             res["endpoints"]["error_b"]), baseline)
            assert v["barrier_error"][i] == pytest.approx(e_top, abs=1e-12)
            assert v["midpoint_barrier_error"][i] == pytest.approx(e_mid, abs=1e-12)
            if baseline == "path":  # every path's own line passes through both of its ends
                assert v["excess_loss"][i][0] == pytest.approx(0.0, abs=1e-12)
                assert v["excess_loss"][i][-1] == pytest.approx(0.0, abs=1e-12)
            seen += 1
            differ += abs(top - mid) > 1e-6
    assert seen == 1 + 4 * 5 + 5  # full; single ×2, cumulative ×2 (5 groups each); random
    assert differ > 0  # the two definitions are not the same numbers on these paths


def test_single_layer_midpoint_is_the_hand_averaged_model(pair):
    """The midpoint of the single-layer path of block2 is the model with block2 = ½(A + B), the rest A's."""
    a, b, batches = pair
    alphas = [0.0, 0.5, 1.0]
    res = connect(make_bundle("a", a, VECTOR), make_bundle("b", b, VECTOR), batches, modes=["single"],
                  alphas=alphas, baseline="path", progress=False)
    single = res["modes"]["single"]
    k = single["groups"].index("block2")
    names = set(stack_groups(a, make_bundle("a", a, VECTOR).stack)["block2"])
    sa, sb = a.state_dict(), b.state_dict()
    mid, end = copy.deepcopy(a), copy.deepcopy(a)
    mid.load_state_dict({n: 0.5 * sa[n] + 0.5 * sb[n] if n in names else sa[n] for n in sa})
    end.load_state_dict({n: sb[n] if n in names else sa[n] for n in sa})
    la, lm, l1 = _own_loss(a, batches), _own_loss(mid, batches), _own_loss(end, batches)
    assert single["loss"][k] == pytest.approx([la, lm, l1], rel=1e-6)
    # losses are scored from float32 logits (see test_connect.py), so a difference of losses near 2 to ~1e-6
    assert single["midpoint_barrier_loss"][k] == pytest.approx(lm - 0.5 * (la + l1), abs=2e-6)


def test_baseline_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    with pytest.raises(LayerwiseError, match="unknown baseline"):
        run(ConnectOptions(model_a="nowhere", model_b="nowhere", data="digits", baseline="line", out=tmp_path / "x"))
    with pytest.raises(LayerwiseError, match="α = 0 and α = 1"):
        run(ConnectOptions(model_a="nowhere", model_b="nowhere", data="digits", baseline="path", alphas="0.2,0.5,1",
                           out=tmp_path / "y"))
    code, _, err = run_cli(monkeypatch, capsys, "connect", "--model-a", "nowhere", "--model-b", "nowhere", "--data",
                           "digits", "--baseline", "path", "--alphas", "0,0.5", "--out", tmp_path / "z")
    assert code == 2 and err.startswith("error: --baseline path joins") and len(err.splitlines()) == 1
    assert not (tmp_path / "z").exists()


def test_results_and_figure_carry_the_midpoint(pair, tmp_path):
    a, b, _ = pair
    pa, pb = (save_model(make_bundle(n, copy.deepcopy(m).float(), VECTOR), tmp_path / n) for n, m in (("a", a), ("b", b)))
    out = tmp_path / "out"
    run(ConnectOptions(model_a=str(pa), model_b=str(pb), data="digits", out=out, mode=["full", "single"],
                       alphas="0,0.5,1", limit=24, baseline="path", progress=False))
    saved = json.loads((out / "results.json").read_text())
    assert saved["baseline"] == "path" and saved["midpoint_alpha"] == 0.5
    assert len(saved["modes"]["single"]["midpoint_barrier_loss"]) == len(saved["modes"]["single"]["groups"])
    assert (out / "barriers.png").stat().st_size > 0
