"""Run a recipe: each step is one ``layerwise`` command in its own process, in order, into ``out/<step>``.

Resuming: a finished step leaves ``out/.reproduce/<step>.json`` (its command and flags) and is skipped next
time; an unfinished one runs again, and ``train`` continues from its own last checkpoint. A step whose
folder was finished with other settings is refused before anything runs (pass another ``--out``), so
figures that share a step (the same name and flags) share its folder and its work.

``out`` is a run folder (``layerwise.run_folder``): a ``reproduce.json``, ``report.html``, mark or step folder
there that the tool did not write is refused before any step runs, ``overwrite`` or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.files import read_json, read_text
from layerwise.report.schemas import Mark, ReproduceRecord
from layerwise.schema import validate
from layerwise.report.serialize import write_json
from layerwise.reproduce.recipe import Budget, Recipe, Step, command_line, settings
from layerwise.run_folder import open_run_folder

MARKS = ".reproduce"
RECORD = "reproduce.json"
REPORT = "report.html"


def outputs(recipe: Recipe) -> tuple[str, ...]:
    """What reproducing ``recipe`` writes into ``out``: its record, report, finish marks and step folders."""
    return (RECORD, REPORT, MARKS, *(step.name for step in recipe.steps))


def mark_path(out: Path, step: Step) -> Path:
    return out / MARKS / f"{step.name}.json"


def finished(out: Path, step: Step, budget: Budget) -> dict | None:
    """The finish mark of a step that already ran to the end with these settings (None: run it); a mark of
    other settings is an error."""
    path = mark_path(out, step)
    if not (path.exists() or path.is_symlink()):
        return None
    text = read_text(path, "mark")
    try:
        mark = json.loads(text)
    except (ValueError, RecursionError):
        return None  # a mark cut short: run the step again
    if not isinstance(mark, dict):
        raise LayerwiseError(f"{path} is not a JSON object: delete it to run step {step.name!r} again")
    validate(Mark, mark, str(path))
    if mark.get("settings") != settings(step, budget):
        raise LayerwiseError(f"{out / step.name} was written by a step {step.name!r} with other settings "
                             f"({mark.get('settings')}): pass another `out`", option="out")
    return mark


def check_resumable(recipe: Recipe, budget: Budget, out: Path) -> list[dict | None]:
    """The finish mark of each step done (None where not); raises before any work if a folder holds another
    setting's results."""
    return [finished(out, step, budget) for step in recipe.steps]


TRACKED = ("train", "lpft", "analyze", "exit")  # the commands that log to experiment trackers (``log_with``)


def run_step(step: Step, budget: Budget, out: Path, env: dict[str, str], log_with: str | None = None) -> float:
    """One step as ``python -m layerwise.cli …``: its own process, so its memory is returned and its output is live.
    ``log_with``: the experiment trackers, for the steps whose command logs to them (not part of the settings)."""
    argv = [sys.executable, "-m", "layerwise.cli", *command_line(step, budget, out)]
    if log_with and step.command in TRACKED:
        argv += ["--log-with", log_with]
    start = time.perf_counter()
    code = subprocess.call(argv, env=env)
    seconds = time.perf_counter() - start
    if code != 0:
        raise LayerwiseError(f"step {step.name!r} ({step.command}) stopped with exit status {code}: fix what it "
                             "printed, then run the same reproduce command again to resume")
    write_json({"settings": settings(step, budget), "seconds": seconds,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, mark_path(out, step))
    return seconds


def update_record(out: Path, entry: dict[str, Any]) -> None:
    """``out/reproduce.json`` keeps one entry per figure reproduced into ``out`` (read, updated, rewritten)."""
    path = out / RECORD
    record = read_json(path, ReproduceRecord) if path.exists() or path.is_symlink() else {}
    record["figures"] = {**(record.get("figures") or {}), entry["figure"]: entry}
    write_json(record, path)


def reproduce(recipe: Recipe, budget: Budget, out: Path, *, data_dir: Path | None = None,
              echo: Callable[[str], None] = print, overwrite: bool = False,
              log_with: str | None = None) -> dict[str, Any]:
    """Run every step of ``recipe`` not yet done, record the figure in ``out/reproduce.json``; the entry. The
    run folder ``out`` is checked first (``layerwise.run_folder``; ``overwrite``: write beside a user's files)."""
    folder = open_run_folder(out, "reproduce", overwrite=overwrite, outputs=outputs(recipe))
    done = check_resumable(recipe, budget, out)
    env = {**os.environ, **({"LAYERWISE_DATA": str(data_dir)} if data_dir else {})}
    if recipe.data_note:
        echo(f"note: {recipe.data_note}")
    steps = []
    start = time.perf_counter()
    for i, (step, mark) in enumerate(zip(recipe.steps, done), 1):
        skip = mark is not None
        echo(f"[{i}/{len(recipe.steps)}] {step.name}: layerwise {step.command}" + (" (done before)" if skip else ""))
        seconds = mark.get("seconds") if skip else run_step(step, budget, out, env, log_with)
        steps.append({"name": step.name, "command": step.command, "folder": step.name,
                      "args": step.flags(budget), "argv": command_line(step, budget, out)[1:], "seconds": seconds,
                      "skipped": skip})
    entry = {"figure": recipe.figure, "title": recipe.title, "claim": recipe.claim, "budget": budget,
             "data_note": recipe.data_note, "shows": recipe.shows, "minutes_expected": recipe.minutes[budget],
             "seconds": time.perf_counter() - start,  # this invocation; steps done before cost nothing
             "seconds_all_steps": sum(s["seconds"] or 0.0 for s in steps), "steps": steps}
    update_record(out, entry)
    folder.record()
    return entry
