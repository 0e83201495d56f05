"""The one run-folder rule (``layerwise.run_folder``): unit tests of the rule, then every writing command run
through the CLI with a user's files planted in its ``--out``, which must survive byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from layerwise.errors import LayerwiseError
from layerwise.run_folder import MANIFEST, check_output_file, open_run_folder, read_manifest, record_file

OUTPUTS = ("results.json", "*.png", "checkpoint")
USER = b"the user's own notes\n"


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def write_outputs(out: Path) -> None:
    """What a command claiming OUTPUTS writes."""
    (out / "results.json").write_text("{}")
    (out / "layers.png").write_bytes(b"png")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "latest.json").write_text("{}")


# ---------------------------------------------------------------- the rule


def test_fresh_folder_is_created_probed_and_manifested(tmp_path):
    out = tmp_path / "a" / "b"
    folder = open_run_folder(out, "analyze", overwrite=False, outputs=OUTPUTS)
    assert sorted(os.listdir(out)) == [MANIFEST]  # the writability probe left nothing behind
    assert manifest(out) == {"command": "analyze", "outputs": list(OUTPUTS), "running": True, "files": [], "kept": []}
    write_outputs(out)
    (out / "unclaimed.txt").write_text("written during the run, matching no output")
    folder.record()
    folder.record()  # idempotent
    assert manifest(out)["files"] == ["checkpoint", "layers.png", "results.json"]
    assert manifest(out)["running"] is False


def test_unwritable_folder_is_one_error_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LayerwiseError, match="`out`"):
        open_run_folder(blocker / "sub", "analyze", overwrite=False, outputs=OUTPUTS)
    with pytest.raises(LayerwiseError, match="existing file"):
        open_run_folder(blocker, "analyze", overwrite=False, outputs=OUTPUTS)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_own_files_only_are_accepted_without_overwrite(tmp_path):
    folder = open_run_folder(tmp_path, "train", overwrite=False, outputs=OUTPUTS)
    write_outputs(tmp_path)
    folder.record()
    again = open_run_folder(tmp_path, "train", overwrite=False, outputs=OUTPUTS)  # a re-run, or a resume
    assert manifest(again.path)["files"] == ["checkpoint", "layers.png", "results.json"]


def test_a_killed_run_owns_what_matches_its_outputs(tmp_path):
    """Killed before ``record``: what it wrote matching its outputs is its own; nothing else is."""
    open_run_folder(tmp_path, "train", overwrite=False, outputs=OUTPUTS)
    write_outputs(tmp_path)
    open_run_folder(tmp_path, "train", overwrite=False, outputs=OUTPUTS)  # accepted: resumes
    assert manifest(tmp_path)["files"] == ["checkpoint", "layers.png", "results.json"]
    (tmp_path / "notes.txt").write_bytes(USER)
    with pytest.raises(LayerwiseError, match="notes.txt"):
        open_run_folder(tmp_path, "train", overwrite=False, outputs=OUTPUTS)


def test_a_finished_run_does_not_own_a_file_planted_later(tmp_path):
    folder = open_run_folder(tmp_path, "analyze", overwrite=False, outputs=OUTPUTS)
    folder.record()
    (tmp_path / "results.json").write_bytes(USER)  # matches an output, but the tool did not write it
    with pytest.raises(LayerwiseError, match="results.json"):
        open_run_folder(tmp_path, "analyze", overwrite=False, outputs=OUTPUTS)
    with pytest.raises(LayerwiseError, match="would replace .*results.json"):
        open_run_folder(tmp_path, "analyze", overwrite=True, outputs=OUTPUTS)
    assert (tmp_path / "results.json").read_bytes() == USER


def test_foreign_file_without_and_with_overwrite(tmp_path):
    for i in range(5):
        (tmp_path / f"user-{i}.txt").write_bytes(USER)
    with pytest.raises(LayerwiseError) as e:
        open_run_folder(tmp_path, "compare", overwrite=False, outputs=OUTPUTS)
    message = str(e.value)
    assert "`out`" in message and "`overwrite`" in message and "--" not in message and "\n" not in message
    assert "user-0.txt, user-1.txt, user-2.txt and 2 more" in message and "user-3" not in message
    assert not (tmp_path / MANIFEST).exists()  # refused before writing anything
    folder = open_run_folder(tmp_path, "compare", overwrite=True, outputs=OUTPUTS)
    assert manifest(tmp_path)["kept"] == [f"user-{i}.txt" for i in range(5)]
    write_outputs(tmp_path)
    folder.record()
    assert manifest(tmp_path)["files"] == ["checkpoint", "layers.png", "results.json"]
    assert all((tmp_path / f"user-{i}.txt").read_bytes() == USER for i in range(5))
    with pytest.raises(LayerwiseError, match="user-0.txt"):  # kept files stay foreign
        open_run_folder(tmp_path, "compare", overwrite=False, outputs=OUTPUTS)


@pytest.mark.parametrize("name", ["results.json", "fig.png", "checkpoint"])
def test_foreign_entry_matching_an_output_is_refused_even_with_overwrite(tmp_path, name):
    (tmp_path / name).mkdir() if name == "checkpoint" else (tmp_path / name).write_bytes(USER)
    (tmp_path / "notes.txt").write_bytes(USER)
    with pytest.raises(LayerwiseError) as e:
        open_run_folder(tmp_path, "exit", overwrite=True, outputs=OUTPUTS)
    assert name in str(e.value) and "notes.txt" not in str(e.value) and "`overwrite`" in str(e.value)
    assert not (tmp_path / MANIFEST).exists()


def test_a_symlink_entry_is_foreign_even_when_listed(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(USER)
    out = tmp_path / "run"
    folder = open_run_folder(out, "analyze", overwrite=False, outputs=OUTPUTS)
    (out / "results.json").write_text("{}")
    folder.record()
    (out / "results.json").unlink()
    (out / "results.json").symlink_to(target)  # swapped for a link after the run: never written through
    with pytest.raises(LayerwiseError, match="results.json"):
        open_run_folder(out, "analyze", overwrite=False, outputs=OUTPUTS)
    with pytest.raises(LayerwiseError, match="would replace .*results.json"):
        open_run_folder(out, "analyze", overwrite=True, outputs=OUTPUTS)
    (out / "link.png").symlink_to(target)
    (out / "results.json").unlink()
    with pytest.raises(LayerwiseError, match="link.png"):  # a link matching an output pattern is not claimed
        open_run_folder(out, "analyze", overwrite=True, outputs=OUTPUTS)
    assert target.read_bytes() == USER


def test_a_symlinked_manifest_is_refused(tmp_path):
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / MANIFEST).symlink_to(tmp_path / "m.json")
    with pytest.raises(LayerwiseError, match="not a regular file"):
        open_run_folder(tmp_path / "run", "analyze", overwrite=True, outputs=OUTPUTS)


@pytest.mark.parametrize("text, key", [
    ('["a list"]', "value"),
    ('{"command": "x", "outputs": "results.json", "running": true, "files": [], "kept": []}', "outputs"),
    ('{"command": "x", "outputs": [], "running": "yes", "files": [], "kept": []}', "running"),
    ('{"command": "x", "outputs": [], "running": true, "kept": []}', "files"),
    ('{"command": "x", "outputs": [], "running": true, "files": [1], "kept": []}', "files.0"),
    ("{not json", "JSONDecodeError"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_file_and_key(tmp_path, text, key):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(LayerwiseError) as e:
        open_run_folder(tmp_path, "analyze", overwrite=True, outputs=OUTPUTS)
    assert str(tmp_path / MANIFEST) in str(e.value) and key in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / MANIFEST).read_text() == text


def test_temp_files_of_an_interrupted_atomic_write_are_the_tools(tmp_path):
    folder = open_run_folder(tmp_path, "analyze", overwrite=False, outputs=OUTPUTS)
    (tmp_path / "results.json").write_text("{}")
    folder.record()
    (tmp_path / ".results.json.k2x_9abq").write_text("{")  # atomic_write's temporary file, killed mid-write
    (tmp_path / f".{MANIFEST}.ab12cd34").write_text("{")
    (tmp_path / ".layerwise-probe-x1y2z3ab").write_text("")  # the writability probe, killed before its unlink
    open_run_folder(tmp_path, "analyze", overwrite=False, outputs=OUTPUTS)
    assert manifest(tmp_path)["files"] == ["results.json"]  # temporaries are recognised, never listed
    (tmp_path / ".notes.txt.k2x_9abq").write_bytes(USER)  # a temporary of no entry of ours is the user's
    with pytest.raises(LayerwiseError, match="notes"):
        open_run_folder(tmp_path, "analyze", overwrite=False, outputs=OUTPUTS)


def test_a_page_outside_a_run_folder_is_told_by_its_marker_or_the_manifest(tmp_path):
    ours = lambda head: b"generator" in head  # noqa: E731
    page = tmp_path / "report.html"
    assert check_output_file(page, ours) == page
    page.write_bytes(USER)
    with pytest.raises(LayerwiseError, match="not written by layerwise"):
        check_output_file(page, ours)
    page.write_bytes(b"<meta generator>")
    check_output_file(page, ours)
    with pytest.raises(LayerwiseError, match="a folder"):
        check_output_file(tmp_path, ours)
    with pytest.raises(LayerwiseError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "r.html", ours)
    run = tmp_path / "run"
    open_run_folder(run, "reproduce", overwrite=False, outputs=("report.html",)).record()
    (run / "report.html").write_text("a page written before by the tool, then recorded")
    record_file(run / "report.html")
    assert read_manifest(run).files == ["report.html"]
    check_output_file(run / "report.html", ours)
    (run / "page.html").write_bytes(b"<meta generator> a page of ours, copied in by the user")
    open_run_folder(run, "reproduce", overwrite=True, outputs=("report.html",))
    with pytest.raises(LayerwiseError, match="not written by layerwise"):  # kept as the user's: never replaced
        check_output_file(run / "page.html", ours)


# ---------------------------------------------------------------- every writing command, through the CLI


def _recipe(folder: Path) -> Path:
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "figure": "t", "title": "test", "claim": "c", "minutes": {"cpu": 1, "gpu": 1},
        "steps": [{"name": "a", "command": "analyze", "args": {"model": "mlp-residual", "data": "digits", "limit": 64,
                                                               "measures": "cos", "probe": False, "device": "cpu"}}]}))
    return path


# command → (its flags before ``--out``, a file it writes into ``--out``); ``{tmp}`` is the module's folder.
COMMANDS = {
    "train": (["--model", "mlp-residual", "--data", "digits", "--epochs", "1", "--batch-size", "32", "--limit", "64",
               "--eval-limit", "32", "--no-progress"], "metrics.json"),
    "analyze": (["--model", "mlp-residual", "--data", "digits", "--limit", "64", "--measures", "cos", "--no-probe",
                 "--device", "cpu"], "results.json"),
    "compare": (["--model-a", "mlp-residual", "--model-b", "mlp-plain", "--data", "digits", "--limit", "64",
                 "--measures", "cos", "--device", "cpu"], "results.json"),
    "exit": (["--model", "mlp-residual", "--data", "digits", "--limit", "64", "--device", "cpu"], "results.json"),
    "truncate": (["--model", "mlp-residual", "--k", "2"], "config.json"),
    "generate": (["--model", "gpt-tiny", "--early-exit", "--sweep", "0.3,0.9", "--prompt", "the cat",
                  "--max-new-tokens", "4", "--device", "cpu"], "results.json"),
    "gen-eval": (["--model", "gpt-tiny", "--data", "{tmp}/corpus.txt", "--num-prompts", "2", "--prefix-len", "4",
                  "--max-new-tokens", "6", "--diversity", "tokens", "--device", "cpu"], "samples.txt"),
    "connect": (["--model-a", "mlp-plain", "--model-b", "mlp-plain", "--data", "digits", "--alphas", "0,1",
                 "--limit", "16", "--batch-size", "8", "--no-progress", "--device", "cpu"], "results.json"),
    "lpft": (["--model", "mlp-residual", "--data", "digits", "--limit", "80", "--eval-limit", "40", "--ntk-subset",
              "4", "--ft-lrs", "1e-3", "--lpft-lrs", "1e-4", "--no-progress", "--device", "cpu"], "results.json"),
    "reproduce": (["{tmp}/recipe.yaml"], "reproduce.json"),
    "report": (["{tmp}/analyzed"], "report.html"),  # --out is the page: the user's file is planted at its path
}
CASES = {  # case → (pass --overwrite, plant a file named like an output)
    "refused": (False, True),  # a user's files, no --overwrite: one line, exit 2
    "kept": (True, False),  # --overwrite: the command runs beside the user's file
    "colliding": (True, True),  # --overwrite, but an output would replace the user's file: refused up front
}


def _out_path(root: Path, command: str) -> Path:
    return root / command / ("report.html" if command == "report" else "out")


# Runs ``layerwise ARGS`` for each (name, ARGS) of the JSON in argv[1], one after the other in this one process
# (a refusal comes before any work, so they cannot disturb each other), and writes {name: [status, stderr]} to
# argv[2]: one interpreter start instead of one per refusal.
REFUSALS = """
import contextlib, io, json, sys
from layerwise.cli import main
calls, path, results = json.loads(sys.argv[1]), sys.argv[2], {}
for name, args in calls.items():
    sys.argv, err = ["layerwise", *args], io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except Exception as e:  # a traceback of one command must not hide the others' results
            code = 1
            err.write(f"Traceback: {e!r}")
    results[name] = [code, err.getvalue()]
json.dump(results, open(path, "w"))
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Every (command, case), with its files planted: a run of its own for each case that runs, and the cases
    that must be refused in two processes: the results (returncode, stderr) and the planted files."""
    import subprocess
    import sys

    from fixtures import CLI, CORPUS, run_children

    from layerwise.commands.analyze import AnalyzeOptions
    from layerwise.commands.analyze import run as analyze

    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    _recipe(tmp)
    analyze(AnalyzeOptions(model="mlp-residual", data="digits", out=tmp / "analyzed", limit=64, measures="cos",
                           probe=False, device="cpu"))
    plants: dict[tuple[str, str], dict[Path, bytes]] = {}
    refusals: list[dict[str, list[str]]] = [{}, {}]
    runs = []
    for case, (overwrite, collide) in CASES.items():
        for i, (command, (flags, output)) in enumerate(COMMANDS.items()):
            out = _out_path(tmp / case, command)
            folder = out.parent if command == "report" else out
            folder.mkdir(parents=True)
            files = {folder / "notes.txt": USER + command.encode()}
            if collide:
                files[folder / output] = b"{\"mine\": true}\n" + case.encode()
            for path, data in files.items():
                path.write_bytes(data)
            plants[command, case] = files
            args = [command, *(f.replace("{tmp}", str(tmp)) for f in flags), "--out", str(out)]
            # report writes one page, not a folder: it has no --overwrite and replaces only a page of its own
            args += ["--overwrite"] if overwrite and command != "report" else []
            if collide:
                refusals[i % 2][f"{command}/{case}"] = args
            else:
                runs.append((f"{command}/{case}", [*CLI, *args]))
    drivers = [(f"refusals-{i}", [sys.executable, "-c", REFUSALS, json.dumps(calls), str(tmp / f"refusals-{i}.json")])
               for i, calls in enumerate(refusals)]
    done = run_children(drivers + runs, workers=2, timeout=240)
    results = {name: done[name] for name, _ in runs}
    for name, _ in drivers:
        assert done[name].returncode == 0, done[name].stderr[-3000:]
        for key, (code, err) in json.loads((tmp / f"{name}.json").read_text()).items():
            results[key] = subprocess.CompletedProcess([], code, "", err)
    return tmp, plants, results


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_users_files_in_out_survive_every_command(planted, command, case):
    tmp, plants, results = planted
    done = results[f"{command}/{case}"]
    for path, data in plants[command, case].items():
        assert path.read_bytes() == data, f"{path.name} was changed"
    overwrite, collide = CASES[case]
    if collide:  # refused: one line naming a user's file, no traceback
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
        named = [p.name for p in plants[command, case]] if not overwrite else [COMMANDS[command][1]]
        assert any(name in lines[0] for name in named), lines[0]
    else:  # ran beside the user's file, which the manifest keeps
        assert done.returncode == 0, done.stderr[-2000:]
        out, output = _out_path(tmp / case, command), COMMANDS[command][1]
        assert (out if command == "report" else out / output).is_file()
        if command != "report":
            listed = read_manifest(out)
            assert listed.kept == ["notes.txt"] and output in listed.files and "notes.txt" not in listed.files


# ---------------------------------------------------------------- checked before any work


def test_train_checks_its_folder_before_loading_anything(tmp_path):
    from fixtures import train_config

    from layerwise.training import train

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_bytes(USER)
    with pytest.raises(LayerwiseError, match="notes.txt"):  # not the unknown data set: nothing was loaded
        train(train_config(tmp_path, data="no-such-data-set"))
    assert sorted(os.listdir(tmp_path / "run")) == ["notes.txt"]


@pytest.mark.parametrize("name", ["reproduce.json", "report.html"])
def test_reproduce_refuses_a_record_it_did_not_write_before_any_step(tmp_path, monkeypatch, name):
    import subprocess

    from layerwise.reproduce import read_recipe, reproduce

    def no_process(*a, **k):
        raise AssertionError("a step ran")

    monkeypatch.setattr(subprocess, "call", no_process)
    recipe = read_recipe(_recipe(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_bytes(USER)
    for overwrite in (False, True):
        with pytest.raises(LayerwiseError, match=name):
            reproduce(recipe, "cpu", tmp_path / "out", echo=lambda _: None, overwrite=overwrite)
    assert sorted(os.listdir(tmp_path / "out")) == [name]
