"""Image data sets: scikit-learn's digits and CIFAR-10 (decoded once from the JPEG tarball, cached)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from layerwise.data.dataset import LayerwiseDataset, stratified_indices
from layerwise.data.locate import cache_dir, find_data
from layerwise.errors import LayerwiseError
from layerwise.files import LIMITS, check_regular
from layerwise.report.serialize import atomic_write

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_digits(split: str) -> LayerwiseDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = stratified_indices(bunch.target, split, "digits")
    images = torch.from_numpy(bunch.images[idx] / 16.0).float().unsqueeze(1)  # pixel values are 0..16
    labels = torch.from_numpy(bunch.target[idx]).long()
    return LayerwiseDataset("digits", "image", images=images, labels=labels, class_names=[str(d) for d in range(10)])


def load_cifar10(split: str, data_dir: str | Path | None) -> LayerwiseDataset:
    if split in ("validation", "valid", "dev"):
        split = "test"
    if split not in ("train", "test"):
        raise LayerwiseError(f"unknown split {split!r} for cifar10: use train or test")
    cache = cache_dir() / "cifar10"
    if not all((cache / f"{s}_{a}.npy").is_file() for s in ("train", "test") for a in ("x", "y")):
        build_cifar10_cache(find_data("cifar10-jpg.tar.gz", data_dir), cache)
    check_regular(cache / f"{split}_x.npy", "archive")
    images = torch.from_numpy(np.load(cache / f"{split}_x.npy")).permute(0, 3, 1, 2)  # NHWC on disk
    labels = torch.from_numpy(np.load(cache / f"{split}_y.npy")).long()
    return LayerwiseDataset("cifar10", "image", images=images, labels=labels, class_names=list(CIFAR10_CLASSES))


def build_cifar10_cache(tarball: Path, cache: Path) -> None:
    """Decode every JPEG once (both splits in one pass over the gzip) into uint8 ``.npy`` files."""
    from PIL import Image

    decoded: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    check_regular(tarball, "archive")
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpg/<split>/<class>/<file>.jpg
            if member.isfile() and len(parts) == 4 and parts[1] in decoded and parts[3].endswith(".jpg"):
                if member.size > LIMITS["image"]:
                    raise LayerwiseError(f"{tarball}: {member.name} is {member.size} bytes, no CIFAR-10 image: "
                                         "fetch the archive again")
                with Image.open(io.BytesIO(archive.extractfile(member).read())) as img:
                    decoded[parts[1]].append((parts[2], parts[3], np.asarray(img.convert("RGB"))))
    for split, items in decoded.items():
        classes = sorted({c for c, _, _ in items})
        if tuple(classes) != CIFAR10_CLASSES:
            raise LayerwiseError(f"{tarball} {split} has classes {classes}: expected the 10 CIFAR-10 folders")
        items.sort(key=lambda item: item[:2])  # tar order is arbitrary; sort for a stable index
        _save_npy(cache / f"{split}_x.npy", np.stack([a for _, _, a in items]))
        _save_npy(cache / f"{split}_y.npy", np.array([classes.index(c) for c, _, _ in items], dtype=np.int64))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Written atomically, so readers never see a partial cache."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)
