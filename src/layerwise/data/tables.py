"""Any table of labelled text: ``.tsv``, ``.csv`` or ``.jsonl`` rows with a text column, an optional second text
(sentence pairs) and a label, read with Python's ``csv`` and ``json`` modules.

Columns are named by the caller (``Columns``) or found among the usual names (``TEXT_PAIRS``, ``TEXTS``,
``LABELS``). Labels are read as one of three kinds (``label_ids``):

- a fixed set of values (GLUE's string or digit labels): each value's position in the set is its id;
- class indices 0, 1, 2, … (a table of integer labels; any other value names its row);
- real numbers (a regression target: the ``score`` column, or ``regression=True``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data.dataset import LayerwiseDataset, stratified_indices
from layerwise.errors import LayerwiseError
from layerwise.files import LIMITS, csv_fields, read_text
from layerwise.schema import short_repr

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
# Usual column names, most specific first: sentence pairs, single texts, labels.
TEXT_PAIRS = (("sentence1", "sentence2"), ("question1", "question2"), ("#1 String", "#2 String"),
              ("question", "sentence"), ("premise", "hypothesis"), ("text", "text_pair"))
TEXTS = ("sentence", "text")
LABELS = ("label", "score", "gold_label", "is_duplicate", "Quality", "labels")
REGRESSION_NAMES = ("score",)  # a label column of this name is read as a regression target
OPTIONS = "text column, text-pair column and label column"
MAX_CLASSES = 100_000  # a class index at or above this is a typo or an id, not a class (ImageNet-21k has 21,841)
MAX_TARGET = 1e15  # a regression target beyond this overflows float32 losses (its square is 1e30; float32 ends at 3e38)


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text, the optional second text and the label: names, or 0-based positions for a
    file without a header. ``None`` means: find it among the usual names."""

    text: str | int | None = None
    pair: str | int | None = None
    label: str | int | None = None


@dataclass
class Table:
    """Rows of a table file as dicts keyed by column name (or position, when there is no header)."""

    source: str
    columns: list[str | int]
    rows: list[tuple[int, dict[str | int, Any]]]  # (line number in the file, the row)


def read_table(path: Path, *, header: bool = True) -> Table:
    """The rows of a ``.tsv`` / ``.csv`` (``csv`` module; TSV as GLUE writes it, quotes taken literally) or
    ``.jsonl`` file (one JSON object a line). Blank lines are skipped; a row with fewer fields than the header
    names its line."""
    text, source = read_text(path, "table"), str(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(text, source)
    dialect = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if path.suffix == ".tsv" else {}
    lines = text.split("\n")  # not splitlines(): \x85 and \u2028 inside a sentence are no row ends
    reader = csv.reader(lines, **dialect)
    names: list[str | int] | None = None
    rows: list[tuple[int, dict]] = []
    with csv_fields(LIMITS["table"]):  # a long text is valid input; the file is already bounded by its cap
        try:
            records = [(reader.line_num, fields) for fields in reader]
        except csv.Error as e:
            raise LayerwiseError(f"{source} line {reader.line_num + 1} is not {path.suffix[1:].upper()} ({e}): fix "
                                 "or remove that row") from None
    for number, fields in records:
        if not any(f.strip() for f in fields):
            continue
        if names is None and header:
            names = [f.strip() for f in fields]
            continue
        if names is not None and len(fields) < len(names):
            kind = "tab-separated" if path.suffix == ".tsv" else "comma-separated"
            raise LayerwiseError(f"{source} line {number} has {len(fields)} {kind} fields but the header has "
                                 f"{len(names)}: fix or remove that row")
        keys = names if names is not None else list(range(len(fields)))
        rows.append((number, dict(zip(keys, fields))))
    if names is None:
        names = list(range(max((len(r) for _, r in rows), default=0)))
    return Table(source, names, rows)


def _read_jsonl(text: str, source: str) -> Table:
    rows, names = [], {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LayerwiseError(f"{source} line {number} is not JSON ({e.msg}): fix or remove that row") from None
        except (ValueError, RecursionError):  # a number of more digits than Python converts, nesting too deep
            raise LayerwiseError(f"{source} line {number} is JSON the tool cannot read (a number too long or "
                                 "nesting too deep): fix or remove that row") from None
        if not isinstance(row, dict):
            raise LayerwiseError(f"{source} line {number} is a JSON {type(row).__name__}, not an object of columns: "
                                 "write one object per line")
        names.update(dict.fromkeys(row))
        rows.append((number, row))
    return Table(source, list(names), rows)


def find_columns(table: Table, given: Columns | None) -> Columns:
    """The text, pair and label columns: those given, else the usual names present in the table."""
    given = given or Columns()
    present = set(table.columns)
    for name in (given.text, given.pair, given.label):
        if name is not None and name not in present:
            raise LayerwiseError(f"{table.source} has no column {name!r}; its columns are {_listed(table)}: "
                                 f"set the {OPTIONS} to some of these")
    text, pair = given.text, given.pair
    if text is None:
        found = next(((a, b) for a, b in TEXT_PAIRS if a in present and b in present), None)
        if found is not None and pair is None:
            text, pair = found
        else:
            text = next((n for n in (*TEXTS, *(a for a, _ in TEXT_PAIRS)) if n in present), None)
    label = given.label if given.label is not None else next((n for n in LABELS if n in present), None)
    if text is None:
        raise LayerwiseError(f"{table.source} has no text column among its columns {_listed(table)} (looked for "
                             f"{', '.join(TEXTS)} or a pair such as sentence1/sentence2): set the {OPTIONS}")
    return Columns(text, pair, label)


def _listed(table: Table) -> str:
    return ", ".join(repr(c) for c in table.columns) or "none"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else "" if value is None else str(value)


def _field_text(row: dict, column: str | int, source: str, number: int) -> str:
    """The text in ``row[column]``; a row without it, or with a value that is not a string (a JSON number, list,
    object or null), names its line."""
    if column not in row:
        raise LayerwiseError(f"{source} line {number} has no {column!r} field: fix or remove that row")
    value = row[column]
    if not isinstance(value, str):
        raise LayerwiseError(f"{source} line {number} has a JSON {_json_kind(value)} as its {column!r} text, not a "
                             "string: fix or remove that row")
    return value.strip()


def _json_kind(value: Any) -> str:
    return "null" if value is None else "boolean" if isinstance(value, bool) else "number" if isinstance(
        value, (int, float)) else "array" if isinstance(value, list) else "object"


def label_ids(values: Sequence[tuple[int, Any]], source: str, *, label_set: Sequence[str] | None = None,
              regression: bool = False) -> torch.Tensor:
    """Labels (line number, raw value) → a tensor: ids of ``label_set`` (the value's position in it), real
    numbers (``regression``), or class indices 0, 1, 2, …; anything else names its row."""
    if regression:
        return torch.tensor([_real(v, source, n) for n, v in values], dtype=torch.float32)
    if label_set is not None:
        index = {v: i for i, v in enumerate(label_set)}
        out = []
        for number, value in values:
            key = _text(value)
            if key not in index:
                raise LayerwiseError(f"{source} line {number} has label {short_repr(key, 60)}, outside the task's labels "
                                     f"{', '.join(label_set)}: fix or remove that row")
            out.append(index[key])
        return torch.tensor(out, dtype=torch.long)
    return torch.tensor([_index(v, source, n) for n, v in values], dtype=torch.long)


def _real(value: Any, source: str, number: int) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    except OverflowError:  # an integer too large for a float
        x = math.inf
    if not math.isfinite(x):
        raise LayerwiseError(f"{source} line {number} has no real-valued score ({short_repr(value, 60)}): a regression "
                             "target must be a finite number; fix or remove that row")
    if abs(x) > MAX_TARGET:
        raise LayerwiseError(f"{source} line {number} has score {x:g}, beyond ±{MAX_TARGET:g}: rescale the "
                             "targets, or fix or remove that row")
    return x



def _index(value: Any, source: str, number: int) -> int:
    """A class index 0, 1, 2, …; negative, fractional or word labels name the row to fix."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return _class(value, source, number)
    text = _text(value)
    # isascii: int() would also take "1_0", "١" (Arabic-Indic one) and the like, which no label file means.
    if text.isascii() and text.isdigit():
        return _class(int(text) if len(text) <= 18 else MAX_CLASSES, source, number)
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise LayerwiseError(f"{source} line {number} has label {text}: labels are class indices counted from 0; "
                             "fix or remove that row")
    raise LayerwiseError(f"{source} line {number} has no integer label ({short_repr(text, 60)}): fix or remove that row; a "
                         "classifier takes class indices, so a real-valued target belongs in a column named score")


def _class(index: int, source: str, number: int) -> int:
    if index >= MAX_CLASSES:
        shown = str(index) if index < MAX_CLASSES * 10**6 else "a number that large"
        raise LayerwiseError(f"{source} line {number} has label {shown}: labels are class indices 0, 1, 2, …, "
                             f"and {MAX_CLASSES:,} classes or more are none a classifier here has; fix or remove "
                             "that row")
    return index


def _word_labels(values: Sequence[tuple[int, Any]]) -> list[str] | None:
    """The sorted distinct labels when none of them is a number (word labels), else None."""
    texts = [_text(v) for _, v in values]

    def numeric(t: str) -> bool:
        try:
            float(t)
            return True
        except ValueError:
            return False

    return None if not texts or any(numeric(t) for t in texts) else sorted(set(texts))


def table_dataset(table: Table, columns: Columns, name: str, *, label_set: Sequence[str] | None = None,
                  class_names: Sequence[str] | None = None, regression: bool | None = None,
                  metrics: Sequence[str] | None = None) -> LayerwiseDataset:
    """A text ``LayerwiseDataset`` from the chosen columns. ``regression=None``: a label column named
    ``score`` is a regression target; word labels without a ``label_set`` get ids in sorted order."""
    if columns.label is None:
        raise LayerwiseError(f"{table.source} has no label column among its columns {_listed(table)} (looked for "
                             f"{', '.join(LABELS)}): set the {OPTIONS}")
    texts = [_field_text(row, columns.text, table.source, n) for n, row in table.rows]
    pairs = None if columns.pair is None else [_field_text(row, columns.pair, table.source, n) for n, row in table.rows]
    raw = [(n, row.get(columns.label)) for n, row in table.rows]
    if regression is None:
        regression = columns.label in REGRESSION_NAMES
    if not regression and label_set is None:
        label_set = _word_labels(raw)
    labels = label_ids(raw, table.source, label_set=label_set, regression=regression)
    if regression:
        names = None
    elif class_names is not None:
        names = list(class_names)
    elif label_set is not None:
        names = list(label_set)
    else:
        names = [str(c) for c in range(int(labels.max()) + 1 if len(labels) else 0)]
    default = ("pearson", "spearman") if regression else ("accuracy",)
    return LayerwiseDataset(name, "text", texts=texts, pairs=pairs, labels=labels, class_names=names,
                            regression=regression, metrics=tuple(metrics or default))


def load_table(path: Path, split: str, columns: Columns | None = None) -> LayerwiseDataset:
    """One table file: ``all`` is every row; ``train`` a fixed 80% and ``test`` (alias dev, validation) the
    other 20% (seed 0, stratified by class for classifiers), as for data sets shipped without splits."""
    if not path.exists():
        raise LayerwiseError(f"table file {path} not found: pass an existing {'/'.join(TABLE_SUFFIXES)} file")
    table = read_table(path)
    ds = table_dataset(table, find_columns(table, columns), path.stem)
    if len(ds) == 0:
        return ds
    if ds.regression:
        labels = np.zeros(len(ds), dtype=int)  # a plain seeded split
    else:
        labels = ds.labels.numpy()
        if np.bincount(labels).min(initial=0) < 2 or len(ds) < 5:
            labels = np.zeros(len(ds), dtype=int)  # too few of a class to stratify
    return ds.subset(torch.as_tensor(stratified_indices(labels, split, ds.name)))
