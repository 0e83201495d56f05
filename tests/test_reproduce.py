"""``layerwise reproduce``: the packaged recipes are valid commands, and a run resumes where it stopped."""

from __future__ import annotations

import base64
import html
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerwise.errors import LayerwiseError
from layerwise.report.html import write_report
from layerwise.reproduce import BUDGETS, all_recipes, command_line, find_recipe, read_recipe, reproduce

from cli_options import unknown_parts

# The figures the issue names: every one must have a recipe.
PAPER_FIGURES = {"1", "2", "3", "3b", "4", "5", "6", "7", "8", "9", "10", "11", "13", "connect", "lpft"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise.cli", *args], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_list_names_every_figure_of_the_paper():
    result = run_cli("reproduce", "--list")
    assert result.returncode == 0, result.stderr
    listed = {name for line in result.stdout.splitlines()[1:] if line[:1].strip()
              for name in line.split()[0].split("/")}
    assert PAPER_FIGURES <= listed
    for figure in PAPER_FIGURES:
        recipe = find_recipe(f"fig{figure}")
        assert figure in (recipe.figure, *recipe.aliases)


@pytest.mark.parametrize("recipe", all_recipes(), ids=lambda r: r.figure)
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_step_is_a_valid_command_line(recipe, budget, tmp_path):
    """Each step's flags, at each budget, are options its command really declares; references name earlier
    steps' folders."""
    for i, step in enumerate(recipe.steps):
        argv = command_line(step, budget, tmp_path)
        assert not unknown_parts(argv), (step.name, unknown_parts(argv))
        assert argv[-2:] == ["--out", str(tmp_path / step.name)]
        earlier = {str(tmp_path / s.name) for s in recipe.steps[:i]}
        paths = [a for a in argv[1:-2] if a.startswith(str(tmp_path))]
        assert set(paths) <= earlier


def test_command_line_spells_lists_booleans_and_references(tmp_path):
    step = read_recipe(_write(tmp_path, [
        {"name": "a", "command": "train", "args": {"model": "mlp-plain"}},
        {"name": "b", "command": "exit", "args": {"model": ["@a", "mlp-plain"], "shift_augment": True,
                                                   "threshold": 0.5}, "cpu": {"threshold": 0.7}}])).steps[1]
    assert command_line(step, "cpu", tmp_path) == [
        "exit", "--model", str(tmp_path / "a"), "--model", "mlp-plain", "--shift-augment", "--threshold", "0.7",
        "--out", str(tmp_path / "b")]
    assert "0.5" in command_line(step, "gpu", tmp_path)


def _write(folder: Path, steps: list[dict], **extra) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({"figure": "t", "title": "test", "claim": "c", "minutes": {"cpu": 1, "gpu": 1},
                                    "steps": steps, **extra}))
    return path


@pytest.mark.parametrize("steps, extra, message", [
    ([{"name": "a", "command": "train"}, {"name": "a", "command": "analyze"}], {}, "two steps are named 'a'"),
    ([{"name": "a", "command": "analyze", "args": {"model": "@b"}}, {"name": "b", "command": "train"}], {},
     "refers to @b"),
    ([{"name": "a", "command": "rm"}], {}, "command"),
    ([{"name": "a", "command": "train"}], {"epochs": 3}, "epochs"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, steps, extra, message):
    with pytest.raises(LayerwiseError, match=message) as e:
        read_recipe(_write(tmp_path, steps, **extra))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["reproduce", "99"], "no recipe for figure '99'"),
    (["reproduce", "11", "--budget", "tpu"], "--budget 'tpu'"),
    (["reproduce", "missing.yaml"], "does not exist"),
    (["reproduce"], "no figure given"),
])
def test_bad_input_exits_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    """Two real steps run once; a second run starts no process; a changed step is refused before anything runs;
    a step without its finish mark (killed) runs again."""
    steps = [{"name": "mlp", "command": "train",
              "args": {"model": "mlp-residual", "data": "digits", "epochs": 1, "batch_size": 256, "depth": 2,
                       "progress": False}},
             {"name": "analyze", "command": "analyze",
              "args": {"model": "@mlp", "data": "digits", "measures": "cos", "probe": False}}]
    recipe = read_recipe(_write(tmp_path, steps))
    out = tmp_path / "out"
    entry = reproduce(recipe, "cpu", out, echo=lambda _: None)
    trained = json.loads((out / "mlp" / "metrics.json").read_text())
    analysed = json.loads((out / "analyze" / "results.json").read_text())
    assert len(trained["accuracy"]) == 3 and analysed["layers"] == [0, 1, 2]
    assert analysed["config"]["model"] == str(out / "mlp")
    assert [s["skipped"] for s in entry["steps"]] == [False, False]
    assert json.loads((out / "reproduce.json").read_text())["figures"]["t"]["steps"][1]["folder"] == "analyze"

    recipe2 = read_recipe(_write(tmp_path, steps, figure="u", shows=["analyze/similarity_vs_last.png"]))
    reproduce(recipe2, "cpu", out, echo=lambda _: None)  # a second figure into the same folder: nothing reruns
    page = write_report([out], tmp_path / "report.html").read_text()
    png = base64.b64encode((out / "analyze" / "similarity_vs_last.png").read_bytes()).decode()
    assert page.count("<h2>Figure t: test</h2>") == 1 and page.count("<h2>Figure u: test</h2>") == 1
    assert f"data:image/png;base64,{png}" in page  # the figure's own file, shown in its header
    assert html.escape(shlex.join(["layerwise", *command_line(recipe.steps[1], "cpu", out)])) in page

    def no_process(*a, **k):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(subprocess, "call", no_process)
    again = reproduce(recipe, "cpu", out, echo=lambda _: None)
    assert [s["skipped"] for s in again["steps"]] == [True, True]

    steps[0]["args"]["epochs"] = 2
    changed = read_recipe(_write(tmp_path, steps))
    with pytest.raises(LayerwiseError, match="other settings"):
        reproduce(changed, "cpu", out, echo=lambda _: None)

    (out / ".reproduce" / "analyze.json").unlink()  # as if killed before the step finished
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv, env: calls.append(argv) or 0)
    reproduce(recipe, "cpu", out, echo=lambda _: None)
    assert len(calls) == 1 and calls[0][3] == "analyze"
