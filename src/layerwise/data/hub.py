"""``hf:<name>[/<config>]``: a Hugging Face ``datasets`` data set, when that package is installed and the hub is
reachable. Never required: without it the error says what to install."""

from __future__ import annotations

from pathlib import Path

from layerwise.data.dataset import LayerwiseDataset
from layerwise.data.glue import task_named
from layerwise.data.tables import Columns, Table, find_columns, table_dataset
from layerwise.errors import LayerwiseError


def load_hf_dataset(name: str, split: str, columns: Columns | None = None) -> LayerwiseDataset:
    """``glue/mrpc`` → ``datasets.load_dataset("glue", "mrpc", split=...)``; columns as for any table, class
    names from the data set's ``ClassLabel`` feature; GLUE tasks keep their metrics (``data.glue``)."""
    try:
        import datasets
    except ImportError:
        raise LayerwiseError(f"hf:{name} needs the Hugging Face datasets package: pip install datasets (and a "
                             "network connection), or download the data and pass the folder or file") from None
    path, _, config = name.partition("/")
    split = {"dev": "validation", "valid": "validation"}.get(split, split)
    try:
        data = datasets.load_dataset(path, config or None, split=split)
    except Exception as e:  # offline, unknown name or split: datasets raises many types
        raise LayerwiseError(f"cannot load hf:{name} split {split} ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                             "check the name and split, and that the hub is reachable") from e
    rows = [(i + 1, row) for i, row in enumerate(data)]
    table = Table(f"hf:{name}", list(data.column_names), rows)
    cols = find_columns(table, columns)
    feature = data.features.get(cols.label) if cols.label is not None else None
    names = getattr(feature, "names", None)
    task = task_named(config) if path == "glue" and config else None
    regression = names is None and (task is not None and task.labels is None or cols.label == "score")
    ds = table_dataset(table, cols, Path(name).name, label_set=[str(i) for i in range(len(names))] if names else None,
                       class_names=names, regression=regression, metrics=task.metrics if task else None)
    ds.task = task.name if task else None
    return ds
