"""The GLUE tasks in their official layouts (the TSV files of GLUE's download tree), one declarative
``GlueTask`` each.

Label ids follow a fixed, documented order, the one of the Hugging Face ``glue`` data set:

| task | label values in the files → ids | metrics (the first is the task's own) |
|---|---|---|
| CoLA | 0 → 0 unacceptable, 1 → 1 acceptable | Matthews correlation, accuracy |
| SST-2 | 0 → 0 negative, 1 → 1 positive | accuracy |
| MRPC | 0 → 0 not_equivalent, 1 → 1 equivalent | F1, accuracy |
| QQP | 0 → 0 not_duplicate, 1 → 1 duplicate | F1, accuracy |
| STS-B | a real score in [0, 5] (regression) | Pearson, Spearman |
| MNLI | entailment → 0, neutral → 1, contradiction → 2 | accuracy |
| QNLI, RTE | entailment → 0, not_entailment → 1 | accuracy |
| WNLI | 0 → 0 not_entailment, 1 → 1 entailment | accuracy |

A folder is recognised by its name (``CoLA``, ``sst2``, ``STS-B``, …), else by its columns; a folder of
one-sentence ``sentence``/``label`` files under another name is read as a table of integer class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerwise.data.dataset import LayerwiseDataset
from layerwise.data.locate import DATA_ENV
from layerwise.data.tables import Columns, find_columns, read_table, table_dataset
from layerwise.errors import LayerwiseError


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task's layout: columns (names, or positions for a file without a header), labels, metrics."""

    name: str  # the official folder name
    text: str | int
    pair: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # label values as written in the files, in id order; None: regression
    class_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    header: bool = True
    dev: tuple[str, ...] = ("dev",)  # file stems of the evaluation splits, the first being ``dev``
    test: tuple[str, ...] = ("test",)

    @property
    def columns(self) -> Columns:
        return Columns(self.text, self.pair, self.label)


_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("CoLA", 3, None, 1, ("0", "1"), ("unacceptable", "acceptable"), ("mcc", "accuracy"), header=False),
    GlueTask("SST-2", "sentence", None, "label", ("0", "1"), ("negative", "positive"), ("accuracy",)),
    GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("0", "1"), ("not_equivalent", "equivalent"),
             ("f1", "accuracy")),
    GlueTask("QQP", "question1", "question2", "is_duplicate", ("0", "1"), ("not_duplicate", "duplicate"),
             ("f1", "accuracy")),
    GlueTask("STS-B", "sentence1", "sentence2", "score", None, None, ("pearson", "spearman")),
    GlueTask("MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
             ("entailment", "neutral", "contradiction"), ("accuracy",), dev=("dev_matched", "dev_mismatched"),
             test=("test_matched", "test_mismatched")),
    GlueTask("QNLI", "question", "sentence", "label", _NLI2, _NLI2, ("accuracy",)),
    GlueTask("RTE", "sentence1", "sentence2", "label", _NLI2, _NLI2, ("accuracy",)),
    GlueTask("WNLI", "sentence1", "sentence2", "label", ("0", "1"), ("not_entailment", "entailment"), ("accuracy",)),
)}
# One-sentence sentence/label files under another folder name: integer class indices, any number of classes.
PLAIN = GlueTask("plain", "sentence", None, "label", None, None, ("accuracy",))


def _key(name: str) -> str:
    return name.upper().replace("-", "").replace("_", "")


def task_named(name: str) -> GlueTask | None:
    """The GLUE task called ``name`` in any spelling (``STS-B``, ``stsb``, ``sst_2``), else None."""
    return next((t for t in GLUE_TASKS.values() if _key(t.name) == _key(name)), None)


def glue_folder(name: str) -> str:
    """``glue/<official folder name>`` for a task name in any spelling (unknown names kept as given)."""
    task = task_named(name)
    return f"glue/{task.name if task else name}"


def _file(directory: Path, stem: str) -> Path:
    return directory / f"{stem}.tsv"


def recognise(directory: Path) -> GlueTask:
    """The task of a folder: by its name, else by the columns of its first TSV file."""
    task = task_named(directory.name)
    if task is not None:
        return task
    files = [p for p in (_file(directory, s) for s in ("train", "dev", "dev_matched", "test")) if p.is_file()]
    if not files:
        raise LayerwiseError(f"{directory} holds no train.tsv or dev.tsv: point `data` at a GLUE task folder",
                             option="data")
    table = read_table(files[0], header=True)
    found = set(table.columns)
    first = table.rows[0][1] if table.rows else {}
    for t in sorted(GLUE_TASKS.values(), key=lambda t: -len({t.text, t.pair, t.label} - {None})):
        if t.header and {t.text, t.pair, t.label} - {None} <= found:
            if t.name in ("RTE", "WNLI") and first and str(first.get("label", "")).strip() not in t.labels:
                continue  # the same columns: RTE's labels are words, WNLI's digits
            return PLAIN if t.name == "SST-2" else t
    if len(table.columns) == 4 and str(table.columns[1]).strip() in ("0", "1"):
        return GLUE_TASKS["CoLA"]  # no header: the first row is data (source, label, mark, sentence)
    raise LayerwiseError(f"{files[0]} matches no GLUE task layout (its first row is {', '.join(map(str, table.columns))}"
                         f"): name the folder after its task ({', '.join(GLUE_TASKS)}) or pass the file itself with "
                         "the text and label columns set")


def _labelled(path: Path, task: GlueTask) -> bool:
    table = read_table(path, header=task.header)
    return task.label in table.columns and (task.header or bool(table.rows) and len(table.rows[0][1]) > 3)


def split_file(directory: Path, task: GlueTask, split: str, name: str) -> Path:
    """The file of ``split``: ``dev`` (alias validation) is the first dev file (MNLI: ``dev_matched``; its
    ``dev_mismatched`` by name); ``test`` is the test file when it is labelled, else ``dev`` (GLUE's test
    files are unlabelled), so evaluation defaults work."""
    if split in ("validation", "valid", "dev"):
        split = task.dev[0]
    if split in ("test", *task.test):
        test = _file(directory, task.test[0] if split == "test" else split)
        split = test.stem if test.is_file() and _labelled(test, task) else task.dev[0]
    if split not in ("train", *task.dev, *task.test):
        known = ", ".join(("train", "dev (alias validation)", *task.dev[1:], "test"))
        raise LayerwiseError(f"unknown split {split!r} for {name}: use {known}")
    path = _file(directory, split)
    if not path.is_file():
        raise LayerwiseError(f"{path} not found: set {DATA_ENV} or pass `data_dir` to the data root that holds it",
                             option="data_dir")
    return path


def load_glue(directory: Path, split: str, *, name: str) -> LayerwiseDataset:
    """A GLUE task folder in its official layout (see the module docstring); ``name`` names the data set."""
    task = recognise(directory)
    path = split_file(directory, task, split, name)
    table = read_table(path, header=task.header)
    ds = table_dataset(table, find_columns(table, task.columns), name, label_set=task.labels, class_names=task.class_names,
                       regression=task.labels is None and task is not PLAIN, metrics=task.metrics)
    ds.task = None if task is PLAIN else task.name
    return ds
