"""``reproduce``: run everything one of the paper's figures needs, one ``layerwise`` process per step (resuming
where it stopped), then write its report (reproduce.json, a folder per step, report.html)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable

from pydantic import PositiveInt

from layerwise.commands.common import CommandOptions, Folder, LogWith
from layerwise.errors import LayerwiseError



class ReproduceOptions(CommandOptions):
    """The options of ``reproduce``."""

    figure: str | None = None  # a figure (see ``list_recipes``), or a recipe .yaml file
    budget: str = "cpu"  # cpu (under an hour on 2 cores) | gpu (the paper's settings)
    out: Folder | None = None  # [runs/reproduce/FIGURE]; steps shared by figures reproduced into one folder run once
    data_dir: Folder | None = None
    report: bool = True  # write OUT/report.html at the end
    seeds: PositiveInt | None = None  # runs per seeded step [the recipe's count: 3 at cpu under 15 minutes, else 1]
    overwrite: bool = False
    log_with: LogWith = None  # experiment trackers of the steps that take them (train, lpft, analyze, exit)



def minutes(m: float) -> str:
    """An expected time as minutes, or hours from two hours on."""
    return f"{m:.0f} min" if m < 120 else f"{m / 60:.0f} h"


def list_recipes() -> str:
    """One block per figure: its names, expected time of one seed per budget, its seeds (cpu/gpu), what it
    shows, the commands it runs, and which data stands in for the paper's."""
    from layerwise.reproduce import all_recipes

    lines = [f"{'figure':12s} {'cpu':>7s} {'gpu':>7s} {'seeds':>5s}  what it shows"]
    for r in all_recipes():
        commands = ", ".join(dict.fromkeys(s.command for s in r.steps))
        lines.append(f"{'/'.join([r.figure, *r.aliases]):12s} {minutes(r.minutes['cpu']):>7s} "
                     f"{minutes(r.minutes['gpu']):>7s} {r.seed_count('cpu'):>2d}/{r.seed_count('gpu'):<2d}  {r.title}")
        detail = f"runs {len(r.steps)} steps ({commands})" + (f"; data: {r.data_note}" if r.data_note else "")
        lines += textwrap.wrap(detail, 110, initial_indent=" " * 36, subsequent_indent=" " * 36)
    return "\n".join(lines)


def run(options: ReproduceOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Reproduce ``figure`` into ``out``; the figure's entry of reproduce.json (with ``report``, the page's path
    or None, and ``expected``, its expected time)."""
    o = options
    if o.figure is None:
        raise LayerwiseError("no figure given: pass a figure name or a recipe file (list_recipes() lists them)")
    from layerwise.reproduce import BUDGETS, find_recipe, reproduce

    if o.budget not in BUDGETS:
        raise LayerwiseError(f"`budget` {o.budget!r}: pass {' or '.join(BUDGETS)}")
    from layerwise.training.log import tracker_names

    tracker_names(o.log_with)  # a missing tracker package is refused before any step runs
    recipe = find_recipe(o.figure)
    out = Path(o.out or Path("runs/reproduce") / recipe.figure)
    # reproduce opens OUT as its run folder (reproduce.runner.outputs) before any step runs
    entry = reproduce(recipe, o.budget, out, data_dir=o.data_dir, echo=echo, overwrite=o.overwrite,  # type: ignore[arg-type]
                      seeds=o.seeds, log_with=o.log_with)
    entry["expected"] = minutes(recipe.minutes[o.budget] * entry["seeds"])
    entry["report"] = None
    if o.report:
        from layerwise.report.html import write_report

        entry["report"] = write_report([out], out / "report.html")  # every figure reproduced into OUT
    return entry
