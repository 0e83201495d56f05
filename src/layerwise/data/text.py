"""Labelled text: the embedded sentiment sentences (GLUE tasks are in ``glue``, other tables in ``tables``)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from layerwise.data.dataset import LayerwiseDataset, stratified_indices
from layerwise.errors import LayerwiseError
from layerwise.files import normalize_text

SENTIMENT_CLASSES = ["negative", "positive"]


def load_sentences(split: str) -> LayerwiseDataset:
    content = resources.files("layerwise.resources").joinpath("sentences.tsv").read_text("utf-8")
    texts, labels = parse_tsv(content, "sentences.tsv")
    idx = stratified_indices(np.asarray(labels), split, "sentences")
    return LayerwiseDataset(
        "sentences", "text", texts=[texts[i] for i in idx], labels=torch.tensor(labels)[idx], class_names=SENTIMENT_CLASSES
    )


def parse_tsv(content: str, source: str) -> tuple[list[str], list[int]]:
    """Sentences and labels from a GLUE SST-2 style TSV (header with ``sentence`` and ``label``).

    A leading byte-order mark, CRLF line ends and blank lines are accepted; labels must be class
    indices 0, 1, 2, … and a row without one is an error naming its line (as numbered in the file).
    """
    rows = _rows(content)
    if not rows:
        raise LayerwiseError(f"{source} is empty: it needs a header 'sentence<TAB>label' and rows")
    header = _columns(rows[0][1])
    if "sentence" not in header or "label" not in header:
        raise LayerwiseError(f"{source} has columns {header}: expected a header with 'sentence' and 'label'")
    s_col, l_col = header.index("sentence"), header.index("label")
    texts, labels = [], []
    for number, line in rows[1:]:
        fields = line.split("\t")
        if len(fields) <= max(s_col, l_col):
            raise LayerwiseError(f"{source} line {number} has {len(fields)} tab-separated fields but the header has "
                                 f"{len(header)}: fix or remove that row")
        labels.append(_label(fields[l_col], source, number))
        texts.append(fields[s_col].strip())
    return texts, labels


def _rows(content: str) -> list[tuple[int, str]]:
    """The non-blank lines of a TSV with their 1-based line numbers in the file."""
    lines = normalize_text(content).split("\n")  # not splitlines(): it also splits at \x85, \u2028, … inside text
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _columns(header: str) -> list[str]:
    """Column names of a header line, without stray spaces around them."""
    return [name.strip() for name in header.split("\t")]


def _label(field: str, source: str, number: int) -> int:
    """A class index 0, 1, 2, …; anything else (negative, fractional, words) names the row to fix."""
    value = field.strip()
    # isascii: int() would also take "1_0", "١" (Arabic-Indic one) and the like, which no label file means.
    if value.isascii() and value.isdigit():
        return int(value)
    if value.startswith("-") and value[1:].isascii() and value[1:].isdigit():
        raise LayerwiseError(f"{source} line {number} has label {value}: labels are class indices counted from 0; "
                             "fix or remove that row")
    raise LayerwiseError(f"{source} line {number} has no integer label ({value!r}): fix or remove that row")
