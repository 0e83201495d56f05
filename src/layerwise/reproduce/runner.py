"""Run a recipe: each step is one ``layerwise`` command in its own process, in order, into ``out/<step>``.

Seeds: with ``seeds`` n > 1 every step that declares a ``seed`` (or uses the folder of one that does) runs once
per seed k = 0..n−1 with its ``seed`` offset by k, seed 0 into ``out/<step>`` and seed k into ``out/<step>-s<k>``
(its ``@step`` references pointing at the same seed's folders); steps without a seed run once. After the steps,
each of the recipe's ``verdicts`` is read from every seed's folders and summarised (``reproduce.verdicts``).

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
from layerwise.reproduce.recipe import Budget, Recipe, Step, command_line, references, settings
from layerwise.reproduce.verdicts import OPEN, per_seed_value, verdict
from layerwise.run_folder import open_run_folder

MARKS = ".reproduce"
RECORD = "reproduce.json"
REPORT = "report.html"


def outputs(recipe: Recipe, seeds: int = 1, budget: Budget = "cpu") -> tuple[str, ...]:
    """What reproducing ``recipe`` writes into ``out``: its record, report, finish marks and step folders."""
    return (RECORD, REPORT, MARKS, *(step.name for step, _ in seeded_steps(recipe, budget, seeds)),
            *(plot.file for plot in recipe.plots))


def seeded(recipe: Recipe, budget: Budget) -> set[str]:
    """The steps that run once per seed: those with a ``seed`` flag, and those using such a step's folder."""
    varying: set[str] = set()
    for step in recipe.steps:
        flags = step.flags(budget)
        if "seed" in flags or any(ref in varying for ref in references(flags)):
            varying.add(step.name)
    return varying


def seed_folder(name: str, k: int, varying: set[str]) -> str:
    """Seed 0 (and a step without a seed) keeps the step's own folder, so one seed is exactly the old run."""
    return name if k == 0 or name not in varying else f"{name}-s{k}"


def seed_step(step: Step, k: int, budget: Budget, varying: set[str]) -> Step:
    """Step ``step`` of seed ``k``: its ``seed`` (and an explicit ``data_seed``) + k, its references to the same
    seed's folders, its folder. ``data_seed`` moves with the seed so that two steps whose data orders differ at
    seed 0 (``connect``'s shared-initialisation pair) still differ at every seed."""
    flags = dict(step.flags(budget))
    for key in ("seed", "data_seed"):
        if k and key in flags:
            if not isinstance(flags[key], int) or isinstance(flags[key], bool):
                raise LayerwiseError(f"step {step.name!r}: {key} {flags[key]!r} is not an integer: fix the recipe")
            flags[key] = flags[key] + k

    def ref(v):
        return "@" + seed_folder(v[1:], k, varying) if isinstance(v, str) and v.startswith("@") else v

    flags = {key: [ref(v) for v in value] if isinstance(value, list) else ref(value) for key, value in flags.items()}
    return Step(name=seed_folder(step.name, k, varying), command=step.command, args=flags)


def seeded_steps(recipe: Recipe, budget: Budget, seeds: int) -> list[tuple[Step, int]]:
    """Every (step, seed) to run, seed by seed (seed 0's figure is whole first); a folder name clash with another
    step (a step named ``x-s1`` beside ``x``) is refused."""
    varying = seeded(recipe, budget)
    runs = [(seed_step(step, k, budget, varying), k) for k in range(seeds) for step in recipe.steps
            if k == 0 or step.name in varying]
    names = [s.name for s, _ in runs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise LayerwiseError(f"with {seeds} seeds two steps would write into {clash!r}: rename the recipe's step "
                             f"{clash!r} (seed k of a step goes into <step>-s<k>)", option="seeds")
    return runs


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


def check_resumable(steps: list[Step], budget: Budget, out: Path) -> list[dict | None]:
    """The finish mark of each step done (None where not); raises before any work if a folder holds another
    setting's results."""
    return [finished(out, step, budget) for step in steps]


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


def seed_folders(recipe: Recipe, budget: Budget, seeds: int) -> list[dict[str, str]]:
    """For each seed, every step's folder."""
    varying = seeded(recipe, budget)
    return [{s.name: seed_folder(s.name, k, varying) for s in recipe.steps} for k in range(seeds)]


def draw_plots(recipe: Recipe, budget: Budget, seeds: int, out: Path) -> tuple[list[str], list[str]]:
    """The recipe's plots across steps and seeds (``reproduce.plots``): the files drawn, and a warning for each
    that could not be."""
    from layerwise.reproduce.plots import draw

    drawn, warnings = [], []
    for plot in recipe.plots:
        try:
            drawn.append(draw(plot, seed_folders(recipe, budget, seeds), out).name)
        except (LayerwiseError, ValueError) as e:
            warnings.append(f"plot {plot.file} not drawn: {e}")
    return drawn, warnings


def verdicts(recipe: Recipe, budget: Budget, seeds: int, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Each check of the recipe over the seeds' folders (``Verdict`` records), and a warning for each that
    could not be read (its verdict then "not resolved at this budget")."""
    folders = seed_folders(recipe, budget, seeds)
    records, warnings = [], []
    for check in recipe.verdicts:
        try:
            values = [per_seed_value(check, folders[k], out) for k in range(seeds)]
            records.append(verdict(check, values))
        except LayerwiseError as e:
            warnings.append(f"verdict {check.quantity!r} not computed: {e}")
            records.append({"quantity": check.quantity, "expect": check.expect, "values": [], "mean": None,
                            "interval": None, "method": None, "verdict": OPEN, "error": str(e)})
    return records, warnings


def reproduce(recipe: Recipe, budget: Budget, out: Path, *, data_dir: Path | None = None,
              echo: Callable[[str], None] = print, overwrite: bool = False, seeds: int | None = None,
              log_with: str | None = None) -> dict[str, Any]:
    """Run every step of ``recipe`` not yet done, ``seeds`` times (default: the recipe's count), record the figure
    and its verdicts in ``out/reproduce.json``; the entry. The run folder ``out`` is checked first
    (``layerwise.run_folder``; ``overwrite``: write beside a user's files). ``log_with``: the steps' trackers."""
    n = recipe.seed_count(budget) if seeds is None else seeds
    if n < 1:
        raise LayerwiseError(f"`seeds` {n}: pass a positive number of seeds", option="seeds")
    runs = seeded_steps(recipe, budget, n)
    folder = open_run_folder(out, "reproduce", overwrite=overwrite, outputs=outputs(recipe, n, budget))
    done = check_resumable([s for s, _ in runs], budget, out)
    env = {**os.environ, **({"LAYERWISE_DATA": str(data_dir)} if data_dir else {})}
    if recipe.data_note:
        echo(f"note: {recipe.data_note}")
    steps = []
    start = time.perf_counter()
    for i, ((step, k), mark) in enumerate(zip(runs, done), 1):
        skip = mark is not None
        echo(f"[{i}/{len(runs)}] {step.name}: layerwise {step.command}" + (f" (seed {k})" if n > 1 else "")
             + (" (done before)" if skip else ""))
        seconds = mark.get("seconds") if skip else run_step(step, budget, out, env, log_with)
        steps.append({"name": step.name, "command": step.command, "folder": step.name, "seed": k,
                      "args": step.flags(budget), "argv": command_line(step, budget, out)[1:], "seconds": seconds,
                      "skipped": skip})
    records, warnings = verdicts(recipe, budget, n, out)
    plots, plot_warnings = draw_plots(recipe, budget, n, out)
    for record in records:
        interval = record["interval"]
        shown = "no interval" if interval is None else f"95 % [{interval[0]:.4g}, {interval[1]:.4g}]"
        mean = "n/a" if record["mean"] is None else f"{record['mean']:.4g}"
        echo(f"verdict: {record['quantity']}: {mean} ({shown}, {n} seed{'s' * (n > 1)}): {record['verdict']}")
    entry = {"figure": recipe.figure, "title": recipe.title, "claim": recipe.claim, "budget": budget,
             "data_note": recipe.data_note, "shows": recipe.shows, "minutes_expected": recipe.minutes[budget],
             "seconds": time.perf_counter() - start,  # this invocation; steps done before cost nothing
             "seconds_all_steps": sum(s["seconds"] or 0.0 for s in steps), "steps": steps, "seeds": n,
             "verdicts": records, "plots": plots, "warnings": warnings + plot_warnings}
    update_record(out, entry)
    folder.record()
    return entry
