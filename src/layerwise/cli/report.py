"""``layerwise report``: one self-contained HTML page from any run folders (``report.html``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app


def run_report(folders: list[Path], out: Path, title: str | None = None) -> Path:
    """Check every folder and ``--out`` before reading anything whole, then write the page."""
    from layerwise.report.html import check_folder, check_out_file, write_report

    check_out_file(out)  # its message names `out`
    for folder in folders:
        check_folder(folder)
    return write_report(folders, out, title=title)


@app.command("report")
def report_command(
    folders: list[Path] = typer.Argument(..., help="run folders written by analyze, compare, train, exit, gen-eval, "
                                                   "connect, lpft or reproduce", show_default=False),
    out: Path = typer.Option(Path("report.html"), help="the HTML file to write (a page of ours may be overwritten)"),
    title: Optional[str] = typer.Option(None, help="the page's title [default: from the folders]"),
) -> None:
    """One self-contained HTML page of any runs: figures, sortable per-layer tables, configuration, warnings."""
    run_report(folders, out, title)
    typer.echo(f"wrote {out}")
