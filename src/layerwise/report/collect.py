"""What ``layerwise report`` reads from a run folder: its kind, configuration, warnings, figures and per-layer tables.

A folder's kind is the ``"command"`` its ``results.json`` (``metrics.json`` for ``train``) names, or, for folders
written before that key existed, what its files look like. Each kind has one collector (``report.kinds``), which
turns the folder's files into a :class:`Run`: plain data (cells already formatted), which the HTML template only
lays out.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerwise import files
from layerwise.errors import LayerwiseError
from layerwise.report.schemas import Results
from layerwise.schema import Record

KINDS = ("analyze", "compare", "train", "exit", "gen-eval", "connect", "lpft", "generate")
MISSING = "–"


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown, and the number it sorts by (None: sorts as text, or last when blank)."""

    text: str
    value: float | None = None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Run:
    """One run folder as the page shows it. ``per_layer`` maps a metric to its value per layer label: the
    columns of the combined table when several runs of one kind stand side by side."""

    kind: str
    folder: Path
    name: str
    config: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, data URI)
    tables: list[Table] = field(default_factory=list)
    per_layer: dict[str, dict[str, float | None]] = field(default_factory=dict)
    text: str | None = None
    results: dict = field(default_factory=dict)  # the folder's results.json (metrics.json) as read: for the overlays


def fmt(value: Any) -> Cell:
    """A value as a cell: integers whole, floats to 4 significant digits, None/NaN/Inf as a dash, lists as JSON."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell(MISSING)
    if isinstance(value, bool):
        return Cell(str(value).lower())
    if isinstance(value, int):
        return Cell(str(value), float(value))
    if isinstance(value, float):
        return Cell(f"{value:.4g}", value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return Cell(text if len(text) <= 120 else text[:117] + "…")
    return Cell(str(value))


def make_table(title: str, rows: list[dict]) -> Table:
    """One row per dict; the columns are the union of their keys, in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return Table(title, columns, [[fmt(row.get(c)) for c in columns] for row in rows])


def flatten(options: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested options as ``(a.b, text)`` pairs."""
    pairs = []
    for key, value in options.items():
        if isinstance(value, dict) and value:
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", fmt(value).text))
    return pairs


def data_uri(folder: Path, name: str | Path) -> str:
    """The PNG ``folder/name`` as a data URI: confined to ``folder``, a regular file, PNG by its header, capped."""
    return "data:image/png;base64," + base64.b64encode(files.read_png(files.inside(folder, name))).decode("ascii")


def present(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` is there at all (a dangling or outward symlink, a FIFO: yes, to be refused)."""
    path = folder / name
    try:
        return path.is_symlink() or path.exists()
    except ValueError:  # a NUL byte in a name read from a JSON file: there, to be refused
        return True


def read_json(folder: Path, name: str, schema: type[Record] | None = None) -> Any:
    """The JSON file ``folder/name``, confined to ``folder`` and checked against ``schema``."""
    return files.read_json(files.inside(folder, name), schema)


def optional(run: Run, name: str, read: Callable[[], Any]) -> Any:
    """``read()``, or None with one warning line on the page when the file is refused (it is left out)."""
    if not present(run.folder, name):
        return None
    try:
        return read()
    except LayerwiseError as e:
        run.warnings.append(f"{name} is left out: {e}")
        return None


def number(text: str) -> float | str | None:
    """A CSV cell back to a number where it is one; empty → None."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_csv(folder: Path, name: str) -> list[dict]:
    """The rows of the CSV ``folder/name`` (cells back to numbers), confined to ``folder``; fields beyond the
    header are dropped."""
    path = files.inside(folder, name)
    reader = csv.reader(files.read_text(path, "table").split("\n"))
    header = None
    rows = []
    with files.csv_fields(files.LIMITS["table"]):
        try:
            for fields in reader:
                if header is None:
                    header = fields
                elif fields:
                    rows.append({k: number(v) for k, v in zip(header, fields)})
        except csv.Error as e:
            raise LayerwiseError(f"{path} is not CSV ({e}): pass a folder written by layerwise") from None
    return rows


def at(values: Any, i: int) -> Any:
    """``values[i]``, or None where ``values`` is no list or too short (a per-layer list of another length)."""
    return values[i] if isinstance(values, list) and 0 <= i < len(values) else None


def scalars(d: dict) -> dict:
    """The entries of ``d`` that are not nested (lists of numbers count as nested)."""
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list)) and k != "command"}


def by_layer(values: list, layers: list | None = None) -> dict[str, float | None]:
    return {str(ell): v for ell, v in zip(layers if layers is not None else range(len(values)), values)}


# ---------------------------------------------------------------- kinds


def detect(folder: Path) -> str | None:
    """The command that wrote ``folder`` (``reproduce`` included), or None when nothing here is ours."""
    if present(folder, "reproduce.json"):
        return "reproduce"
    names = ("results.json", "metrics.json")
    read = {name: read_json(folder, name, Results) for name in names if present(folder, name)}
    for data in read.values():
        if data.get("command") in KINDS:
            return data["command"]
    if "metrics.json" in read and present(folder, "log.jsonl"):
        return "train"
    if "results.json" not in read:
        return None
    r = read["results.json"]
    guesses = [("lpft", "recipes" in r), ("connect", "modes" in r and "alphas" in r),
               ("gen-eval", "models" in r and "diversity_convention" in r), ("exit", "models" in r and "policy" in r),
               ("compare", "layers_a" in r), ("analyze", "layers" in r and "cos" in r)]
    return next((kind for kind, hit in guesses if hit), None)
