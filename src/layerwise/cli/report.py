"""``layerwise report``: flags → ``commands.report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.commands import report


@app.command("report")
def report_command(
    folders: list[Path] = typer.Argument(..., help="run folders written by analyze, compare, train, exit, gen-eval, "
                                                   "connect, lpft or reproduce", show_default=False),
    out: Path = typer.Option(Path("report.html"), help="the HTML file to write (a page of ours may be overwritten)"),
    title: Optional[str] = typer.Option(None, help="the page's title [default: from the folders]"),
) -> None:
    """One self-contained HTML page of any runs: figures, sortable per-layer tables, configuration, warnings."""
    typer.echo(f"wrote {report.run(options(report.ReportOptions, locals()))}")
