"""``load_dataset``: a data set name or path to a ``LayerwiseDataset``.

Two small data sets need no files: ``digits`` (scikit-learn) and ``sentences`` (package data); the rest
are located through ``layerwise.data.locate``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerwise.data.corpora import load_tinyshakespeare, load_wikitext2
from layerwise.data.dataset import LayerwiseDataset
from layerwise.data.glue import glue_folder, load_glue
from layerwise.data.images import load_cifar10, load_digits
from layerwise.data.locate import find_data
from layerwise.data.tables import TABLE_SUFFIXES, Columns, load_table
from layerwise.data.text import load_sentences
from layerwise.data.variants import load_variant, parse_variant
from layerwise.errors import LayerwiseError
from layerwise.files import read_text

KNOWN_NAMES = (
    "digits, cifar10, sst2, glue/<TASK> (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI), tinyshakespeare, "
    "wikitext2, sentences, a GLUE task folder, a .tsv/.csv/.jsonl table, hf:<name>[/<config>], or a .txt file; "
    "cifar10-c:<corruption>:<severity 1-5> for CIFAR-10-C, and <name>:classes=A-B for a subset of the classes"
)


def load_dataset(
    spec: str,
    split: str = "test",
    *,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    columns: Columns | None = None,
) -> LayerwiseDataset:
    """Load a data set by name or path; ``limit`` keeps the first ``limit`` examples after a seeded shuffle.

    Names: ``digits``, ``sentences`` (splits train/test, a stratified 80/20 split with seed 0, or all),
    ``cifar10`` (train/test), ``sst2`` / ``glue/<TASK>`` / a directory with ``train.tsv``/``dev.tsv``
    (see ``data.glue``), a ``.tsv``/``.csv``/``.jsonl`` table (``columns`` picks its text, pair and label
    columns, else the usual names; see ``data.tables.load_table`` for its splits), ``hf:<name>[/<config>]``
    (Hugging Face ``datasets``, when installed and online), ``tinyshakespeare`` (train = first 90% of the text, test/valid = last 10%),
    ``wikitext2`` (valid/test; there is no train split), and a path to any ``.txt`` file (the whole
    file, whatever the split). Variants (``data.variants``): ``cifar10-c:CORRUPTION:SEVERITY`` and
    ``NAME:classes=A-B``.
    """
    if limit is not None and limit <= 0:
        raise LayerwiseError(f"limit={limit} leaves no examples: pass a positive limit or none")
    variant = None if Path(spec).expanduser().exists() else parse_variant(spec)
    if variant is not None and (variant.corruption is not None or variant.classes is not None):
        return load_variant(variant, spec, _load_full(variant.base, split, data_dir, columns), limit, seed)
    ds = _load_full(spec, split, data_dir, columns)
    if ds.kind == "corpus":
        if not (ds.text or "").strip():
            raise LayerwiseError(f"{ds.name} ({split}) is empty: point it at a file with text")
        ds.limit, ds.seed = limit, seed
        return ds
    if len(ds) == 0:
        raise LayerwiseError(f"{ds.name} ({split}) has no examples: check the data files")
    return _take(ds, limit, seed) if limit is not None else ds


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[:SPLIT]`` → (name, split or None). An existing path is a name whatever colons it holds
    (``notes:v2.txt``), and so is anything whose part after the last colon is no split word (``hf:imdb``)."""
    if Path(spec).expanduser().exists():
        return spec, None
    name, colon, split = spec.rpartition(":")
    if not colon or not name or not split.isalpha() or name.lower() == "hf":
        return spec, None
    return name, split


def _load_full(spec: str, split: str, data_dir: str | Path | None, columns: Columns | None) -> LayerwiseDataset:
    key = spec.lower()
    path = Path(spec).expanduser()
    if columns is not None and columns != Columns() and not (key.startswith("hf:") or path.suffix in TABLE_SUFFIXES
                                                           or path.is_dir()):
        given = [f"`{k}_column`" for k, v in (("text", columns.text), ("text_pair", columns.pair),
                                              ("label", columns.label)) if v is not None]
        raise LayerwiseError(f"{', '.join(given)} pick columns of a table (.tsv/.csv/.jsonl, a folder of them, or "
                             f"hf: data), and {spec} is none: drop them", option=given[0][1:-1])
    if key.startswith("hf:"):
        from layerwise.data.hub import load_hf_dataset

        return load_hf_dataset(spec[3:], split, columns)
    if key == "digits":
        return load_digits(split)
    if key == "sentences":
        return load_sentences(split)
    if key == "cifar10":
        return load_cifar10(split, data_dir)
    if key in ("sst2", "sst-2", "glue/sst2", "glue/sst-2"):
        return load_glue(find_data("glue/SST-2", data_dir), split, name="sst2")
    if key.startswith("glue/"):
        return load_glue(find_data(glue_folder(spec[5:]), data_dir), split, name=spec)
    if key == "tinyshakespeare":
        return load_tinyshakespeare(split, data_dir)
    if key in ("wikitext2", "wikitext-2"):
        return load_wikitext2(split, data_dir)
    if path.suffix == ".txt":
        if not path.exists():
            raise LayerwiseError(f"text file {path} not found: pass an existing .txt path")
        return LayerwiseDataset(path.stem, "corpus", text=read_text(path, "corpus"))
    if path.suffix in TABLE_SUFFIXES:
        return load_table(path, split, columns)
    if path.is_dir() and any((path / f).is_file() for f in ("train.tsv", "dev.tsv", "dev_matched.tsv")):
        if columns is not None and columns != Columns():
            return load_table(_split_table(path, split), "all", columns)
        return load_glue(path, split, name=path.name)
    if path.is_dir() and any((path / f"{s}{x}").is_file() for s in ("train", "dev") for x in TABLE_SUFFIXES):
        return load_table(_split_table(path, split), "all", columns)
    raise LayerwiseError(f"unknown data set {spec!r}: use one of {KNOWN_NAMES}")


def _split_table(directory: Path, split: str) -> Path:
    """``directory/<split>.tsv|.csv|.jsonl`` (``validation`` and, when there is no test file, ``test`` mean dev)."""
    stems = {"validation": "dev", "valid": "dev"}.get(split, split)
    candidates = [directory / f"{stems}{x}" for x in TABLE_SUFFIXES]
    if split == "test" and not any(p.is_file() for p in candidates):
        candidates = [directory / f"dev{x}" for x in TABLE_SUFFIXES]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise LayerwiseError(f"{directory} has no {stems} table ({', '.join(p.name for p in candidates)}): "
                             "pass a split it holds (train, dev, test)")
    return found


def _take(ds: LayerwiseDataset, limit: int, seed: int) -> LayerwiseDataset:
    """First ``limit`` examples of a seeded permutation, so any limit is a reproducible random subset."""
    return ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit])


def holdout(ds: LayerwiseDataset, fraction: float, seed: int) -> tuple[LayerwiseDataset, LayerwiseDataset]:
    """(held-out, rest): a seeded random ``fraction`` of the examples, and the others."""
    if not 0.0 < fraction < 1.0:
        raise LayerwiseError(f"held-out fraction {fraction}: pass a fraction in (0, 1) or a split name")
    n_val = int(round(fraction * len(ds)))
    if n_val == 0 or n_val == len(ds):
        raise LayerwiseError(f"a held-out fraction {fraction} of {len(ds)} samples leaves an empty part: use more data")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 1))
    return ds.subset(order[:n_val]), ds.subset(order[n_val:])
