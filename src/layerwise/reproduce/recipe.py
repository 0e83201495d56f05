"""Reproduction recipes: the paper's figures as data (one YAML file per figure, beside the training presets).

A recipe lists the ``layerwise`` commands one figure needs, in order, each with its flags at every budget:

    figure: "5"                       # what ``reproduce 5`` takes; ``aliases`` adds other names
    title: …                          # what the figure shows
    claim: …                          # what the paper claims from it
    data_note: …                      # where the paper's data is absent here, which data stands in
    minutes: {cpu: 12, gpu: 240}      # expected wall-clock time of a run from scratch
    shows: [exit/exit_histogram.png]  # the files (step/file) that make the figure
    seeds: {cpu: 3}                   # seeds per budget (default: 3 at cpu under 15 minutes, else 1)
    verdicts: [...]                   # the quantities the claim rests on (``reproduce.verdicts.Check``)
    plots: [...]                      # figures drawn across steps and seeds into OUT (``reproduce.plots.Plot``)
    steps:
      - name: exit                    # the step's folder under --out
        command: exit                 # a layerwise command
        args: {model: ["@vit-standard", "@vit-aligned"], data: cifar10}   # "@step" = that step's folder
        cpu: {limit: 2000}            # merged over args at --budget cpu
        gpu: {}                       # … and at --budget gpu

A copy of any recipe, edited, runs with ``layerwise reproduce FILE.yaml``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field

from layerwise.errors import LayerwiseError
from layerwise.files import read_text
from layerwise.reproduce.plots import Plot
from layerwise.reproduce.verdicts import Check
from layerwise.schema import Options, validate

Budget = Literal["cpu", "gpu"]
BUDGETS: tuple[str, ...] = get_args(Budget)
Command = Literal["train", "analyze", "compare", "exit", "truncate", "new-gpt", "gen-eval", "connect", "lpft", "merge",
                  "lens"]
Scalar = str | int | float | bool
Value = Scalar | list[Scalar]


class Step(Options):
    """One command of a recipe; its output folder is ``--out``/``name``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    command: Command
    args: dict[str, Value] = {}
    cpu: dict[str, Value] = {}
    gpu: dict[str, Value] = {}

    def flags(self, budget: Budget) -> dict[str, Value]:
        """The step's flags at ``budget``: ``args`` overridden by the budget's own."""
        return {**self.args, **getattr(self, budget)}


class Recipe(Options):
    """Everything one figure needs, start to finish."""

    figure: str
    aliases: list[str] = []
    title: str
    claim: str
    data_note: str = ""
    minutes: dict[Budget, float]
    shows: list[str] = []
    seeds: dict[Budget, int] = {}
    verdicts: list[Check] = []
    plots: list[Plot] = []
    steps: list[Step] = Field(min_length=1)

    def seed_count(self, budget: Budget) -> int:
        """Seeds run by default: the recipe's own count, else 3 at the CPU budget for a figure under 15
        minutes a seed (differences of 1–2 points are within one seed's noise), else 1."""
        if budget in self.seeds:
            return self.seeds[budget]
        return 3 if budget == "cpu" and self.minutes["cpu"] < 15 else 1


def recipe_files() -> list[Path]:
    """The packaged recipes, in figure order (their file names sort that way)."""
    folder = resources.files("layerwise.reproduce") / "recipes"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(path: Path) -> Recipe:
    """A recipe file, validated; a bad file is one line naming the file and the key."""
    text = read_text(path, "recipe")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LayerwiseError(f"cannot read recipe {path}: {e}".splitlines()[0]) from e
    except (RecursionError, ValueError):  # nesting past Python's stack, an int of more digits than it converts
        raise LayerwiseError(f"cannot read recipe {path}: it nests too deeply or holds a number too long") from None
    if not isinstance(raw, dict):
        raise LayerwiseError(f"recipe {path} is not a mapping of keys: copy a packaged recipe and edit it")
    recipe = validate(Recipe, raw, f"recipe {path}")
    check_references(recipe, path)
    return recipe


def check_references(recipe: Recipe, path: Path | str) -> None:
    """Step names are unique and every ``@step`` names an earlier step."""
    seen: set[str] = set()
    for step in recipe.steps:
        if step.name in seen:
            raise LayerwiseError(f"recipe {path}: two steps are named {step.name!r}: rename one")
        for budget in BUDGETS:
            for ref in references(step.flags(budget)):  # type: ignore[arg-type]
                if ref not in seen:
                    raise LayerwiseError(f"recipe {path}: step {step.name!r} refers to @{ref}, which is not an "
                                         "earlier step")
        seen.add(step.name)
    for budget, n in recipe.seeds.items():
        if n < 1:
            raise LayerwiseError(f"recipe {path}: seeds {budget}: {n}: pass a positive number of seeds")
    for check in recipe.verdicts:
        for term in check.terms():
            if term.step not in seen:
                raise LayerwiseError(f"recipe {path}: verdict {check.quantity!r} reads {term.file}, and "
                                     f"{term.step!r} is no step of the recipe")
    for plot in recipe.plots:
        for line in (line for panel in plot.panels for line in panel.lines):
            if line.step not in seen:
                raise LayerwiseError(f"recipe {path}: plot {plot.file} reads {line.file}, and {line.step!r} is no "
                                     "step of the recipe")


def references(flags: dict[str, Value]) -> list[str]:
    """The step names a step's flags refer to (values ``@name``)."""
    values = [v for value in flags.values() for v in (value if isinstance(value, list) else [value])]
    return [v[1:] for v in values if isinstance(v, str) and v.startswith("@")]


def all_recipes() -> list[Recipe]:
    return [read_recipe(p) for p in recipe_files()]


def find_recipe(figure: str) -> Recipe:
    """The recipe of a figure by name or alias (``5``, ``fig5``, ``lpft``), or a recipe file's path."""
    if figure.endswith((".yaml", ".yml")):
        if not Path(figure).exists():  # a FIFO or a device is refused by the read
            raise LayerwiseError(f"recipe file {figure} does not exist: pass an existing recipe file or a figure name")
        return read_recipe(Path(figure))
    key = figure.lower().removeprefix("figure").removeprefix("fig").strip(" -_")
    recipes = all_recipes()
    for recipe in recipes:
        if key in (recipe.figure.lower(), *(a.lower() for a in recipe.aliases)):
            return recipe
    names = ", ".join(r.figure for r in recipes)
    raise LayerwiseError(f"no recipe for figure {figure!r}: pass one of {names}, or a recipe .yaml file")


def command_line(step: Step, budget: Budget, out: Path) -> list[str]:
    """The step as ``layerwise`` arguments: ``key: v`` → ``--key v``, lists repeat the flag, ``true`` is a bare
    switch, ``false`` its ``--no-`` form, ``@name`` the folder of step ``name``; ``--out`` is the step's folder."""
    argv = [step.command]
    for key, value in step.flags(budget).items():
        flag = "--" + key.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool):
                argv.append(flag if v else "--no-" + key.replace("_", "-"))
            else:
                argv += [flag, str(out / v[1:]) if isinstance(v, str) and v.startswith("@") else str(v)]
    return argv + ["--out", str(out / step.name)]


def settings(step: Step, budget: Budget) -> dict[str, Any]:
    """What identifies a step's result: its command and flags (references by name, not by path)."""
    return {"command": step.command, "flags": step.flags(budget)}
