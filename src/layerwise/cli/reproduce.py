"""``layerwise reproduce``: flags → ``commands.reproduce``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.cli.scale import log_with_option
from layerwise.commands import reproduce
from layerwise.errors import LayerwiseError


@app.command("reproduce")
def reproduce_command(
    figure: Optional[str] = typer.Argument(None, help="figure (see --list), or a recipe .yaml file"),
    budget: str = typer.Option("cpu", help="cpu (under an hour on 2 cores) | gpu (the paper's settings)"),
    out: Optional[Path] = typer.Option(None, help="folder of the run [runs/reproduce/FIGURE]; steps shared by "
                                       "figures reproduced into one folder run once"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    list_: bool = typer.Option(False, "--list", help="list the figures, what each runs and its expected time"),
    seeds: Optional[int] = typer.Option(None, help="runs of each seeded step, seed + 0..N−1, with a 95 % interval "
                                        "over them [the recipe's: 3 at cpu under 15 minutes, else 1]"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report.html at the end"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder that holds other files"),
    log_with: Optional[str] = log_with_option(),
) -> None:
    """Reproduce one of the paper's figures start to finish (resumes where it stopped), then write its report."""
    if list_:
        typer.echo(reproduce.list_recipes())
        return
    if figure is None:
        raise LayerwiseError("no figure given: pass one (layerwise reproduce --list shows them)")
    params = {k: v for k, v in locals().items() if k != "list_"}
    entry = reproduce.run(options(reproduce.ReproduceOptions, params), echo=typer.echo)
    typer.echo(f"figure {entry['figure']} ({entry['seeds']} seed{'s' * (entry['seeds'] > 1)}): "
               f"{entry['seconds'] / 60:.1f} min now, "
               f"{entry['seconds_all_steps'] / 60:.1f} min for all its steps (expected {entry['expected']})")
    if entry["report"] is not None:
        typer.echo(f"wrote {entry['report']}")
