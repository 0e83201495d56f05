"""``report``: one self-contained HTML page of any run folders (figures, sortable per-layer tables, configuration,
warnings). It writes one file, ``out``; a page of ours there may be replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError

OUTPUTS = ("*.html",)  # `out` is one page; ``outputs(options)`` names it exactly


class ReportOptions(CommandOptions):
    """The options of ``report``."""

    folders: Annotated[list[Folder], Field(min_length=1)]  # run folders written by layerwise
    out: Folder = Path("report.html")
    title: str | None = None  # the page's title [from the folders]



def run(options: ReportOptions) -> Path:
    """Check every folder and ``out`` before reading anything whole, then write the page; returns its path."""
    from layerwise.report.html import check_folder, check_out_file, write_report

    o = options
    out = Path(o.out)
    check_out_file(out)  # its messages name `out`
    for folder in o.folders:
        check_folder(Path(folder))
    return write_report(list(o.folders), out, title=o.title)
