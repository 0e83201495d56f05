"""``train-exit-classifier``: fit the exit classifier of a language model on its own outputs over a corpus
(``inference.exit_classifier``) and save it into the model's folder, where ``generate``'s classifier policy finds
it. Only the classifier's two files are written; an existing classifier is replaced only with ``overwrite``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import PositiveInt

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError


class TrainExitClassifierOptions(CommandOptions):
    """The options of ``train-exit-classifier``."""

    model: Folder  # a saved language model's folder; the classifier is written into it
    data: str  # the corpus the model's outputs are read on (tinyshakespeare, wikitext2, a .txt file)
    split: str = "train"
    limit: PositiveInt | None = 64  # blocks of `seq_len` tokens (a seeded subset); None: the whole split
    batch_size: PositiveInt = 16
    seq_len: PositiveInt = 128
    seed: int = 0
    overwrite: bool = False  # replace an exit classifier saved there before


def check_folder(o: TrainExitClassifierOptions) -> Path:
    """Before any work: ``model`` is a folder we may add the classifier to (refused: a classifier already there
    without ``overwrite``, a folder that cannot be written)."""
    from layerwise.inference.exit_classifier import META, WEIGHTS
    from layerwise.run_folder import probe_writable

    folder = Path(o.model)
    if not folder.is_dir():
        raise LayerwiseError(f"`model` {o.model} is not a folder: the exit classifier is saved beside a saved model; "
                             "save it first (new-gpt, train)", option="model")
    existing = [name for name in (WEIGHTS, META) if (folder / name).exists()]
    if existing and not o.overwrite:
        raise LayerwiseError(f"{folder} already holds an exit classifier ({', '.join(existing)}): pass `overwrite` "
                             "to replace it", option="overwrite")
    probe_writable(folder)
    return folder


def run(options: TrainExitClassifierOptions) -> dict[str, Any]:
    """Train the classifier and save it into ``model``; returns its metadata and the files written."""
    o = options
    folder = check_folder(o)
    from layerwise.checkpoints import load_model
    from layerwise.data import load_dataset, make_loader
    from layerwise.inference.exit_classifier import train_exit_classifier

    ds = load_dataset(o.data, o.split, limit=o.limit, seed=o.seed)
    if ds.kind != "corpus":
        raise LayerwiseError(f"{o.data} is {ds.kind} data: the exit classifier is fitted on a text corpus "
                             "(tinyshakespeare, wikitext2, a .txt file)", option="data")
    bundle = load_model(str(folder))
    if bundle.stack.task != "lm":
        raise LayerwiseError(f"{o.model} is a {bundle.stack.task} model: the exit classifier decides per-token exit "
                             "of language models", option="model")
    loader = make_loader(ds, bundle.inputs, o.batch_size, seq_len=o.seq_len)
    batches = [{k: b[k] for k in ("input_ids", "attention_mask")} for b in loader]
    clf = train_exit_classifier(bundle.stack, batches, corpus=f"{o.data}:{o.split}")
    written = clf.save(folder, overwrite=o.overwrite)
    return {"meta": clf.meta, "files": [str(p) for p in written], "num_layers": clf.num_layers}
