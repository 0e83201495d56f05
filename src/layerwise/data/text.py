"""Labelled text: the embedded sentiment sentences and GLUE tasks in SST-2's TSV layout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from layerwise.data.dataset import LayerwiseDataset, stratified_indices
from layerwise.data.locate import DATA_ENV
from layerwise.errors import LayerwiseError

SENTIMENT_CLASSES = ["negative", "positive"]


def load_sentences(split: str) -> LayerwiseDataset:
    content = resources.files("layerwise.resources").joinpath("sentences.tsv").read_text("utf-8")
    texts, labels = parse_tsv(content, "sentences.tsv")
    idx = stratified_indices(np.asarray(labels), split, "sentences")
    return LayerwiseDataset(
        "sentences", "text", texts=[texts[i] for i in idx], labels=torch.tensor(labels)[idx], class_names=SENTIMENT_CLASSES
    )


def parse_tsv(content: str, source: str) -> tuple[list[str], list[int]]:
    """Sentences and labels from a GLUE SST-2 style TSV (header with ``sentence`` and ``label``)."""
    lines = [line for line in content.splitlines() if line.strip()]
    if not lines:
        raise LayerwiseError(f"{source} is empty: it needs a header 'sentence<TAB>label' and rows")
    header = lines[0].split("\t")
    if "sentence" not in header or "label" not in header:
        raise LayerwiseError(f"{source} has columns {header}: expected a header with 'sentence' and 'label'")
    s_col, l_col = header.index("sentence"), header.index("label")
    texts, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            labels.append(int(fields[l_col]))
        except (IndexError, ValueError):
            raise LayerwiseError(f"{source} line {number} has no integer label: fix or remove that row") from None
        texts.append(fields[s_col].strip())
    return texts, labels


def _tsv_is_labelled(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        return "label" in f.readline().rstrip("\n").split("\t")


def load_glue(directory: Path, split: str, *, name: str) -> LayerwiseDataset:
    """A GLUE task in SST-2's TSV layout: splits ``train`` and ``dev``.

    ``validation`` always means ``dev``; ``test`` means ``test.tsv`` when it is labelled and
    ``dev`` when it is not (GLUE test files are unlabelled), so evaluation defaults work.
    """
    if split in ("validation", "valid"):
        split = "dev"
    if split == "test" and not ((directory / "test.tsv").is_file() and _tsv_is_labelled(directory / "test.tsv")):
        split = "dev"
    if split not in ("train", "dev", "test"):
        raise LayerwiseError(f"unknown split {split!r} for {name}: use train, dev (alias validation) or test")
    path = directory / f"{split}.tsv"
    if not path.is_file():
        raise LayerwiseError(f"{path} not found: set {DATA_ENV} or pass --data-dir to the data root that holds it")
    texts, labels = parse_tsv(path.read_text(encoding="utf-8"), str(path))
    sentiment = directory.name.upper() in ("SST-2", "SST2") or name == "sst2"
    class_names = SENTIMENT_CLASSES if sentiment else [str(c) for c in range(max(labels, default=-1) + 1)]
    return LayerwiseDataset(name, "text", texts=texts, labels=torch.tensor(labels, dtype=torch.long), class_names=class_names)
