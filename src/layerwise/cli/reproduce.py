"""``layerwise reproduce``: run everything one of the paper's figures needs, then write its report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, check_out_dir
from layerwise.errors import LayerwiseError


def list_recipes() -> str:
    """One block per figure: its names, expected time per budget, what it shows, the commands it runs, and
    which data stands in for the paper's."""
    import textwrap

    from layerwise.reproduce import all_recipes

    lines = [f"{'figure':12s} {'cpu':>7s} {'gpu':>7s}  what it shows"]
    for r in all_recipes():
        commands = ", ".join(dict.fromkeys(s.command for s in r.steps))
        lines.append(f"{'/'.join([r.figure, *r.aliases]):12s} {_minutes(r.minutes['cpu']):>7s} "
                     f"{_minutes(r.minutes['gpu']):>7s}  {r.title}")
        detail = f"runs {len(r.steps)} steps ({commands})" + (f"; data: {r.data_note}" if r.data_note else "")
        lines += textwrap.wrap(detail, 110, initial_indent=" " * 30, subsequent_indent=" " * 30)
    return "\n".join(lines)


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m < 120 else f"{m / 60:.0f} h"


@app.command("reproduce")
def reproduce_command(
    figure: Optional[str] = typer.Argument(None, help="figure (see --list), or a recipe .yaml file"),
    budget: str = typer.Option("cpu", help="cpu (under an hour on 2 cores) | gpu (the paper's settings)"),
    out: Optional[Path] = typer.Option(None, help="folder of the run [runs/reproduce/FIGURE]; steps shared by "
                                       "figures reproduced into one folder run once"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    list_: bool = typer.Option(False, "--list", help="list the figures, what each runs and its expected time"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report.html at the end"),
) -> None:
    """Reproduce one of the paper's figures start to finish (resumes where it stopped), then write its report."""
    if list_:
        typer.echo(list_recipes())
        return
    if figure is None:
        raise LayerwiseError("no figure given: pass one (layerwise reproduce --list shows them)")
    from layerwise.reproduce import BUDGETS, find_recipe, reproduce

    if budget not in BUDGETS:
        raise LayerwiseError(f"--budget {budget!r}: pass {' or '.join(BUDGETS)}")

    recipe = find_recipe(figure)
    out = check_out_dir(out or Path("runs/reproduce") / recipe.figure)
    entry = reproduce(recipe, budget, out, data_dir=data_dir, echo=typer.echo)  # type: ignore[arg-type]
    typer.echo(f"figure {recipe.figure}: {entry['seconds'] / 60:.1f} min now, {entry['seconds_all_steps'] / 60:.1f} min "
               f"for all its steps (expected {_minutes(recipe.minutes[budget])})")
    if report:
        from layerwise.report.html import write_report

        path = write_report([out], out / "report.html")  # every figure reproduced into OUT, titled by its own
        typer.echo(f"wrote {path}")
