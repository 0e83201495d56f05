"""Data sets and loaders: turn a data set name into batches a model consumes.

Real data is located through a setting, never a fixed path: an explicit ``data_dir``
argument, else the ``LAYERWISE_DATA`` environment variable, else the first of
``DEFAULT_DATA_DIRS`` (relative to the working directory) that holds the requested file.
Two small data sets need no files: ``digits`` (scikit-learn) and ``sentences`` (package data).
"""

from __future__ import annotations

import io
import math
import os
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info

from layerwise.errors import LayerwiseError

Modality = Literal["image", "text", "vector", "tokens"]
Kind = Literal["image", "text", "corpus"]

DATA_ENV = "LAYERWISE_DATA"
CACHE_ENV = "LAYERWISE_CACHE"
DEFAULT_DATA_DIRS = ("./data", "../shared/data")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENTIMENT_CLASSES = ["negative", "positive"]
KNOWN_NAMES = (
    "digits, cifar10, sst2, glue/<TASK>, tinyshakespeare, wikitext2, sentences, "
    "a directory holding GLUE-style train.tsv/dev.tsv, or a path to a .txt file"
)
# Which model modalities each kind of data can feed.
_COMPATIBLE: dict[str, tuple[str, ...]] = {"image": ("image", "vector"), "text": ("text",), "corpus": ("tokens",)}
_ROTATION_DEGREES = 15.0


@dataclass
class InputSpec:
    """What a model consumes; built by the model zoo and read by ``make_loader``."""

    modality: Modality
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tokenizer: Any | None = None
    max_length: int = 128
    input_dim: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in ("image", "text", "vector", "tokens"):
            raise LayerwiseError(f"unknown modality {self.modality!r}: use image, text, vector or tokens")


class ByteTokenizer:
    """Byte-level tokenizer (ids 0-255 are UTF-8 bytes, 256 is padding) with a HF-like call."""

    vocab_size = 257
    pad_token_id = 256

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """UTF-8 bytes of ``text``; there are no special tokens (the flag exists for HF parity)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Tensor | list[int], skip_special_tokens: bool = True) -> str:
        """Bytes back to text; padding is dropped and broken UTF-8 is replaced, not raised."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return bytes(i for i in values if i < 256).decode("utf-8", errors="replace")

    def __call__(
        self,
        texts: str | list[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Tokenise like a HF tokenizer: right padding, ``input_ids`` and ``attention_mask``."""
        single = isinstance(texts, str)
        rows = [self.encode(t) for t in ([texts] if single else texts)]
        if truncation and max_length is not None:
            rows = [r[:max_length] for r in rows]
        width = _pad_width(rows, padding, max_length)
        masks = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
        ids = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
        if return_tensors == "pt":
            if len({len(r) for r in ids}) > 1:
                raise LayerwiseError("texts have different lengths: pass padding=True to get tensors")
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(masks, dtype=torch.long)}
        if return_tensors is not None:
            raise LayerwiseError(f"return_tensors={return_tensors!r} is not supported: use 'pt' or None")
        return {"input_ids": ids[0] if single else ids, "attention_mask": masks[0] if single else masks}


def _pad_width(rows: list[list[int]], padding: bool | str, max_length: int | None) -> int:
    """Target length per HF semantics: longest in batch, max_length, or none (0 pads nothing)."""
    if padding in (True, "longest"):
        return max((len(r) for r in rows), default=0)
    if padding == "max_length":
        if max_length is None:
            raise LayerwiseError("padding='max_length' needs max_length")
        return max_length
    if padding in (False, "do_not_pad"):
        return 0
    raise LayerwiseError(f"unknown padding {padding!r}: use True, 'longest', 'max_length' or False")


class LayerwiseDataset(Dataset):
    """A loaded data set.

    ``kind`` is "image" (items ``{"image": FloatTensor(C,H,W) in [0,1], "label": int}``),
    "text" (items ``{"text": str, "label": int}``) or "corpus" (the whole text in ``self.text``;
    items exist only once ``make_loader`` has tokenised it, so indexing raises).
    For a corpus, ``limit`` and ``seed`` are kept and applied to the token blocks in ``make_loader``.
    """

    def __init__(
        self,
        name: str,
        kind: Kind,
        *,
        images: Tensor | None = None,
        texts: list[str] | None = None,
        labels: Tensor | None = None,
        text: str | None = None,
        class_names: list[str] | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.kind = kind
        self.images = images
        self.texts = texts
        self.labels = labels
        self.text = text
        self.class_names = class_names
        self.num_classes = len(class_names) if class_names is not None else None
        self.limit = limit
        self.seed = seed

    def __len__(self) -> int:
        """Number of examples; for a corpus, the number of characters."""
        if self.kind == "corpus":
            return len(self.text or "")
        return len(self.labels) if self.labels is not None else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.kind == "image":
            return {"image": _to_unit_float(self.images[index]), "label": int(self.labels[index])}
        if self.kind == "text":
            return {"text": self.texts[index], "label": int(self.labels[index])}
        raise LayerwiseError(f"{self.name} is a text corpus: iterate make_loader(ds, spec, ...) to get token blocks")

    def __repr__(self) -> str:
        return f"LayerwiseDataset(name={self.name!r}, kind={self.kind!r}, size={len(self)}, num_classes={self.num_classes})"


def _to_unit_float(image: Tensor) -> Tensor:
    """uint8 images are stored to save memory; models see float in [0, 1]."""
    return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()


# ---------------------------------------------------------------- locating files


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "layerwise")


def find_data(relpath: str, data_dir: str | Path | None = None) -> Path:
    """Path of ``relpath`` under the data root given by ``data_dir``, ``LAYERWISE_DATA`` or the defaults."""
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        setting = "--data-dir / data_dir" if data_dir is not None else DATA_ENV
        if not root.is_dir():
            raise LayerwiseError(f"data directory {root} not found: fix {setting} to point at the data root")
        if not (root / relpath).exists():
            raise LayerwiseError(f"{root / relpath} not found: fix {setting} to point at the data root that holds {relpath}")
        return root / relpath
    for root in map(Path, DEFAULT_DATA_DIRS):
        if (root / relpath).exists():
            return root / relpath
    searched = ", ".join(DEFAULT_DATA_DIRS)
    raise LayerwiseError(f"{relpath} not found in {searched}: set {DATA_ENV} or pass --data-dir to the data root")


# ---------------------------------------------------------------- loaders per data set


def load_dataset(
    spec: str,
    split: str = "test",
    *,
    limit: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> LayerwiseDataset:
    """Load a data set by name or path; ``limit`` keeps the first ``limit`` examples after a seeded shuffle.

    Names: ``digits``, ``sentences`` (splits train/test, a stratified 80/20 split with seed 0, or all),
    ``cifar10`` (train/test), ``sst2`` / ``glue/<TASK>`` / a directory with ``train.tsv``/``dev.tsv``
    (see ``load_glue``), ``tinyshakespeare`` (train = first 90% of the text, test/valid = last 10%),
    ``wikitext2`` (valid/test; there is no train split), and a path to any ``.txt`` file (the whole
    file, whatever the split).
    """
    if limit is not None and limit <= 0:
        raise LayerwiseError(f"limit={limit} leaves no examples: pass a positive limit or none")
    ds = _load_full(spec, split, data_dir)
    if ds.kind == "corpus":
        if not (ds.text or "").strip():
            raise LayerwiseError(f"{ds.name} ({split}) is empty: point it at a file with text")
        ds.limit, ds.seed = limit, seed
        return ds
    if len(ds) == 0:
        raise LayerwiseError(f"{ds.name} ({split}) has no examples: check the data files")
    return _take(ds, limit, seed) if limit is not None else ds


def _load_full(spec: str, split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    key = spec.lower()
    if key == "digits":
        return _load_digits(split)
    if key == "sentences":
        return _load_sentences(split)
    if key == "cifar10":
        return _load_cifar10(split, data_dir)
    if key in ("sst2", "sst-2", "glue/sst2", "glue/sst-2"):
        return load_glue(find_data("glue/SST-2", data_dir), split, name="sst2")
    if key.startswith("glue/"):
        return load_glue(find_data(spec, data_dir), split, name=spec)
    if key == "tinyshakespeare":
        return _load_tinyshakespeare(split, data_dir)
    if key in ("wikitext2", "wikitext-2"):
        return _load_wikitext2(split, data_dir)
    path = Path(spec).expanduser()
    if path.suffix == ".txt":
        if not path.is_file():
            raise LayerwiseError(f"text file {path} not found: pass an existing .txt path")
        return LayerwiseDataset(path.stem, "corpus", text=path.read_text(encoding="utf-8"))
    if path.is_dir() and any((path / f).is_file() for f in ("train.tsv", "dev.tsv")):
        return load_glue(path, split, name=path.name)
    raise LayerwiseError(f"unknown data set {spec!r}: use one of {KNOWN_NAMES}")


def _take(ds: LayerwiseDataset, limit: int, seed: int) -> LayerwiseDataset:
    """First ``limit`` examples of a seeded permutation, so any limit is a reproducible random subset."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]
    return LayerwiseDataset(
        ds.name,
        ds.kind,
        images=ds.images[order] if ds.images is not None else None,
        texts=[ds.texts[i] for i in order.tolist()] if ds.texts is not None else None,
        labels=ds.labels[order],
        class_names=ds.class_names,
    )


def _stratified_indices(labels: np.ndarray, split: str, name: str) -> np.ndarray:
    """Fixed 80/20 stratified split (seed 0) for data sets shipped without one."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if split == "all":
        return index
    train, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=0)
    if split == "train":
        return train
    if split in ("test", "validation", "valid", "dev"):
        return test
    raise LayerwiseError(f"unknown split {split!r} for {name}: use train, test or all")


def _load_digits(split: str) -> LayerwiseDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = _stratified_indices(bunch.target, split, "digits")
    images = torch.from_numpy(bunch.images[idx] / 16.0).float().unsqueeze(1)  # pixel values are 0..16
    labels = torch.from_numpy(bunch.target[idx]).long()
    return LayerwiseDataset("digits", "image", images=images, labels=labels, class_names=[str(d) for d in range(10)])


def _load_sentences(split: str) -> LayerwiseDataset:
    content = resources.files("layerwise.resources").joinpath("sentences.tsv").read_text("utf-8")
    texts, labels = parse_tsv(content, "sentences.tsv")
    idx = _stratified_indices(np.asarray(labels), split, "sentences")
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


def _load_tinyshakespeare(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    text = find_data("tinyshakespeare/input.txt", data_dir).read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)  # the usual 90/10 character split (as in nanoGPT)
    if split == "train":
        return LayerwiseDataset("tinyshakespeare", "corpus", text=text[:cut])
    if split in ("test", "valid", "validation", "dev"):
        return LayerwiseDataset("tinyshakespeare", "corpus", text=text[cut:])
    raise LayerwiseError(f"unknown split {split!r} for tinyshakespeare: use train or test")


def _load_wikitext2(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    if split == "train":
        raise LayerwiseError("wikitext2 has no train split here: train on split 'valid' or on tinyshakespeare")
    files = {"valid": "valid.txt", "validation": "valid.txt", "dev": "valid.txt", "test": "test.txt"}
    if split not in files:
        raise LayerwiseError(f"unknown split {split!r} for wikitext2: use valid or test")
    text = find_data(f"wikitext-2/{files[split]}", data_dir).read_text(encoding="utf-8")
    return LayerwiseDataset("wikitext2", "corpus", text=text)


# ---------------------------------------------------------------- CIFAR-10 cache


def _load_cifar10(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    if split in ("validation", "valid", "dev"):
        split = "test"
    if split not in ("train", "test"):
        raise LayerwiseError(f"unknown split {split!r} for cifar10: use train or test")
    cache = _cache_dir() / "cifar10"
    if not all((cache / f"{s}_{a}.npy").is_file() for s in ("train", "test") for a in ("x", "y")):
        build_cifar10_cache(find_data("cifar10-jpg.tar.gz", data_dir), cache)
    images = torch.from_numpy(np.load(cache / f"{split}_x.npy")).permute(0, 3, 1, 2)  # NHWC on disk
    labels = torch.from_numpy(np.load(cache / f"{split}_y.npy")).long()
    return LayerwiseDataset("cifar10", "image", images=images, labels=labels, class_names=list(CIFAR10_CLASSES))


def build_cifar10_cache(tarball: Path, cache: Path) -> None:
    """Decode every JPEG once (both splits in one pass over the gzip) into uint8 ``.npy`` files."""
    from PIL import Image

    decoded: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpg/<split>/<class>/<file>.jpg
            if member.isfile() and len(parts) == 4 and parts[1] in decoded and parts[3].endswith(".jpg"):
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as img:
                    decoded[parts[1]].append((parts[2], parts[3], np.asarray(img.convert("RGB"))))
    for split, items in decoded.items():
        classes = sorted({c for c, _, _ in items})
        if tuple(classes) != CIFAR10_CLASSES:
            raise LayerwiseError(f"{tarball} {split} has classes {classes}: expected the 10 CIFAR-10 folders")
        items.sort(key=lambda item: item[:2])  # tar order is arbitrary; sort for a stable index
        _save_atomic(cache / f"{split}_x.npy", np.stack([a for _, _, a in items]))
        _save_atomic(cache / f"{split}_y.npy", np.array([classes.index(c) for c, _, _ in items], dtype=np.int64))


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write to a private temporary file, then rename, so readers never see a partial cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- augmentation


def augment_images(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (zero padding size//8), horizontal flip (p=0.5) and rotation (uniform in ±15°) per sample."""
    b, _, h, w = images.shape
    ph, pw = h // 8, w // 8
    padded = F.pad(images, (pw, pw, ph, ph))
    dy = torch.randint(0, 2 * ph + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pw + 1, (b,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(_ROTATION_DEGREES)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(b)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    return F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Augmenter:
    """Seeded augmentation: one stream in the main process, one per worker seeded from the loader."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.worker_seed: int | None = None

    def __call__(self, images: Tensor) -> Tensor:
        info = get_worker_info()
        # Workers get copies of this object; reseed from their per-epoch seed so streams differ yet replay.
        if info is not None and info.seed != self.worker_seed:
            self.generator.manual_seed(info.seed)
            self.worker_seed = info.seed
        return augment_images(images, self.generator)


# ---------------------------------------------------------------- collation


def prepare_images(images: Tensor, spec: InputSpec) -> Tensor:
    """Resize, repeat grey to RGB, and normalise a float batch (B,C,H,W) in [0,1] for ``spec``."""
    if spec.image_size is not None and images.shape[-2:] != (spec.image_size, spec.image_size):
        size = (spec.image_size, spec.image_size)
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    if spec.channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=images.dtype).view(1, -1, 1, 1)
        images = (images - mean) / std
    return images


class _ImageCollate:
    def __init__(self, spec: InputSpec, augmenter: _Augmenter | None) -> None:
        self.spec = spec
        self.augmenter = augmenter

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        images = torch.stack([item["image"] for item in items])
        if self.augmenter is not None:
            images = self.augmenter(images)
        images = prepare_images(images, self.spec)
        labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
        if self.spec.modality == "vector":
            return {"inputs": images.flatten(1), "labels": labels}
        return {"pixel_values": images.contiguous(), "labels": labels}


class _TextCollate:
    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        encoded = self.spec.tokenizer(
            [item["text"] for item in items], padding=True, truncation=True, max_length=self.spec.max_length, return_tensors="pt"
        )
        batch = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        batch["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
        return batch


def _block_collate(rows: list[tuple[Tensor]]) -> dict[str, Tensor]:
    ids = torch.stack([row[0] for row in rows])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def corpus_blocks(ds: LayerwiseDataset, tokenizer: Any, seq_len: int) -> Tensor:
    """Tokenise the whole corpus once and cut it into non-overlapping (N, seq_len) blocks.

    The trailing partial block is dropped. With ``ds.limit`` set, ``limit`` blocks are picked by a
    seeded shuffle and kept in text order.
    """
    if seq_len <= 0:
        raise LayerwiseError(f"seq_len={seq_len}: pass a positive --seq-len")
    ids = torch.tensor(_encode_corpus(tokenizer, ds.text or ""), dtype=torch.long)
    n = len(ids) // seq_len
    if n == 0:
        raise LayerwiseError(f"{ds.name} has {len(ids)} tokens, fewer than seq_len={seq_len}: lower --seq-len or use more text")
    blocks = ids[: n * seq_len].view(n, seq_len)
    if ds.limit is not None:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(ds.seed))[: ds.limit]
        blocks = blocks[keep.sort().values]
    return blocks


def _encode_corpus(tokenizer: Any, text: str) -> list[int]:
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text)
    # verbose=False: a HF tokenizer otherwise warns that the text exceeds the model's max length.
    return tokenizer.encode(text, add_special_tokens=False, verbose=False)


def _check_compatible(ds: LayerwiseDataset, spec: InputSpec) -> None:
    allowed = _COMPATIBLE[ds.kind]
    if spec.modality not in allowed:
        takes = {"image": "images", "vector": "flattened images", "text": "labelled sentences", "tokens": "a text corpus"}
        raise LayerwiseError(
            f"the model takes {takes[spec.modality]} ({spec.modality}) but {ds.name} is {ds.kind} data: "
            f"pick a data set for a {spec.modality} model or a model for {'/'.join(allowed)} inputs"
        )
    if spec.modality in ("text", "tokens") and spec.tokenizer is None:
        raise LayerwiseError(f"the model's InputSpec has no tokenizer: set InputSpec.tokenizer to read {ds.name}")
    if ds.kind == "image":
        _check_image_shape(ds, spec)


def _check_image_shape(ds: LayerwiseDataset, spec: InputSpec) -> None:
    c, h, w = ds[0]["image"].shape
    if spec.channels is not None and spec.channels != c and not (c == 1 and spec.channels == 3):
        raise LayerwiseError(f"the model takes {spec.channels}-channel images but {ds.name} has {c}: pick a matching model")
    out_c = spec.channels or c
    if spec.mean is not None and len(spec.mean) != out_c:
        raise LayerwiseError(f"InputSpec.mean has {len(spec.mean)} values for {out_c}-channel images: give one per channel")
    if spec.modality == "vector":
        side = spec.image_size
        features = out_c * (side * side if side is not None else h * w)
        if spec.input_dim is not None and spec.input_dim != features:
            raise LayerwiseError(
                f"the model takes vectors of {spec.input_dim} features but {ds.name} gives {features}: pick a matching model"
            )


def make_loader(
    ds: LayerwiseDataset,
    spec: InputSpec,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    seq_len: int = 128,
    drop_last: bool = False,
) -> DataLoader:
    """Batches as dicts of the model's input keys plus ``labels``.

    image → ``pixel_values`` (B,C,H,W); vector → ``inputs`` (B, input_dim); text → tokenizer output
    (``input_ids``, ``attention_mask``, ``token_type_ids`` if returned), padded to the batch's
    longest and truncated at ``spec.max_length``; corpus → ``input_ids`` (B, seq_len) blocks,
    ``attention_mask`` of ones and ``labels`` equal to ``input_ids`` (unshifted: the consumer
    shifts for next-token prediction, as HF causal LMs do). Shuffling and augmentation are seeded
    by ``seed``, so a run replays exactly.
    """
    _check_compatible(ds, spec)
    if augment and ds.kind != "image":
        raise LayerwiseError(f"augmentation applies to images only, and {ds.name} is {ds.kind} data: drop --augment")
    generator = torch.Generator().manual_seed(seed)
    common = dict(batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers, drop_last=drop_last)
    if ds.kind == "corpus":
        return DataLoader(TensorDataset(corpus_blocks(ds, spec.tokenizer, seq_len)), collate_fn=_block_collate, **common)
    if ds.kind == "text":
        return DataLoader(ds, collate_fn=_TextCollate(spec), **common)
    # A distinct stream for augmentation, so toggling shuffle does not change the augmentations drawn.
    augmenter = _Augmenter(seed + 1) if augment else None
    return DataLoader(ds, collate_fn=_ImageCollate(spec, augmenter), **common)
