"""``LayerwiseDataset``: a loaded data set of images, labelled texts, or one text corpus."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from layerwise.errors import LayerwiseError

Kind = Literal["image", "text", "corpus"]


class LayerwiseDataset(Dataset):
    """A loaded data set.

    ``kind`` is "image" (items ``{"image": FloatTensor(C,H,W) in [0,1], "label": int}``),
    "text" (items ``{"text": str, "label": int | float}``, plus ``"text_pair"`` for sentence pairs) or "corpus" (the whole text in ``self.text``;
    items exist only once ``make_loader`` has tokenised it, so indexing raises).
    For a corpus, ``limit`` and ``seed`` are kept and applied to the token blocks in ``make_loader``.
    ``regression``: the labels are real numbers (a one-output head, ``num_classes`` 1); ``metrics`` names
    the task's per-layer metrics, its own first (``data.metrics``); ``task`` the GLUE task, if any.
    Images must be finite: NaN or Inf is refused when ``images`` is set, before any model sees it.
    """

    def __init__(
        self,
        name: str,
        kind: Kind,
        *,
        images: Tensor | None = None,
        texts: list[str] | None = None,
        pairs: list[str] | None = None,
        labels: Tensor | None = None,
        text: str | None = None,
        class_names: list[str] | None = None,
        limit: int | None = None,
        seed: int = 0,
        regression: bool = False,
        metrics: tuple[str, ...] | None = None,
        task: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.images = images
        self.texts = texts
        self.pairs = pairs
        self.labels = labels
        self.text = text
        self.class_names = class_names
        self.regression = regression
        self.num_classes = 1 if regression else len(class_names) if class_names is not None else None
        self.metrics = tuple(metrics) if metrics else (("pearson", "spearman") if regression else ("accuracy",))
        self.task = task
        self.limit = limit
        self.seed = seed

    @property
    def images(self) -> Tensor | None:
        """(N, C, H, W) images, uint8 or float in [0, 1]; checked for NaN/Inf whenever set."""
        return self._images

    @images.setter
    def images(self, images: Tensor | None) -> None:
        if images is not None:
            _check_finite(self.name, images)
        self._images = images

    def __len__(self) -> int:
        """Number of examples; for a corpus, the number of characters."""
        if self.kind == "corpus":
            return len(self.text or "")
        return len(self.labels) if self.labels is not None else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.kind == "image":
            return {"image": _to_unit_float(self.images[index]), "label": int(self.labels[index])}
        if self.kind == "text":
            item = {"text": self.texts[index], "label": self.labels[index].item()}
            if self.pairs is not None:
                item["text_pair"] = self.pairs[index]
            return item
        raise LayerwiseError(f"{self.name} is a text corpus: iterate make_loader(ds, spec, ...) to get token blocks")

    def check_labels(self, num_classes: int | None, model: str) -> None:
        """Labels must be integer class indices 0..C−1 of the model's head (C = ``num_classes``; None: no head);
        real-valued targets need a regression head (one output) and a regression head needs them."""
        if self.labels is None or not num_classes or not len(self.labels):
            return
        if self.regression != (num_classes == 1):
            have = "real-valued scores (a regression task)" if self.regression else f"{self.num_classes} classes"
            head = "a regression head (one output)" if num_classes == 1 else f"a {num_classes}-class head"
            raise LayerwiseError(f"{self.name} has {have} but {model} has {head}: use a model trained on this "
                                 "task, or a pretrained encoder that gets a new head")
        if self.regression:
            return
        if self.labels.is_floating_point():
            raise LayerwiseError(f"{self.name} has {self.labels.dtype} labels: labels are class indices, "
                                 "pass them as an integer tensor (e.g. labels.long())")
        low, high = int(self.labels.min()), int(self.labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise LayerwiseError(f"{self.name} has label {bad}, outside the {num_classes} classes 0..{num_classes - 1} "
                                 f"of {model}: relabel the data or use a model with a matching head")

    def subset(self, index: Tensor) -> LayerwiseDataset:
        """The examples at ``index`` (a 1-D long tensor), in that order; not for corpora."""
        if self.kind == "corpus":
            raise LayerwiseError(f"{self.name} is a text corpus: subsets are taken of its token blocks (limit)")
        return LayerwiseDataset(
            self.name,
            self.kind,
            images=self.images[index] if self.images is not None else None,
            texts=[self.texts[i] for i in index.tolist()] if self.texts is not None else None,
            pairs=[self.pairs[i] for i in index.tolist()] if self.pairs is not None else None,
            labels=self.labels[index],
            class_names=self.class_names,
            regression=self.regression,
            metrics=self.metrics,
            task=self.task,
        )

    def __repr__(self) -> str:
        return f"LayerwiseDataset(name={self.name!r}, kind={self.kind!r}, size={len(self)}, num_classes={self.num_classes})"


def _check_finite(name: str, images: Tensor) -> None:
    """Refuse NaN/Inf pixels once, where the data enters, so no model scores or trains on them silently."""
    if not isinstance(images, Tensor):
        raise LayerwiseError(f"{name} images are a {type(images).__name__}: pass a torch.Tensor (N, C, H, W)")
    # Integer pixels (uint8) cannot be NaN or Inf; one pass over float ones decides the common, clean case.
    if not images.is_floating_point() or bool(torch.isfinite(images).all()):
        return
    bad = ~torch.isfinite(images).reshape(len(images), -1).all(dim=1)
    first, count = int(bad.nonzero()[0]), int(bad.sum())
    raise LayerwiseError(f"{name} contains NaN/Inf at example {first} ({count} of {len(images)} examples): "
                         "fix the data (replace or drop those examples)")


def _to_unit_float(image: Tensor) -> Tensor:
    """uint8 images are stored to save memory; models see float in [0, 1]."""
    return image.float().div(255.0) if image.dtype == torch.uint8 else image.float()


def stratified_indices(labels: np.ndarray, split: str, name: str) -> np.ndarray:
    """Fixed 80/20 stratified split (seed 0) for data sets shipped without one."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if split == "all":
        return index
    if split not in ("train", "test", "validation", "valid", "dev"):
        raise LayerwiseError(f"unknown split {split!r} for {name}: use train, test or all")
    if len(labels) < 2:  # 80/20 of one example leaves one part empty
        raise LayerwiseError(f"{name} has {len(labels)} example(s), too few for its 80/20 {split} split: add "
                             "examples, or use the split all")
    train, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=0)
    if split == "train":
        return train
    if split in ("test", "validation", "valid", "dev"):
        return test
    raise LayerwiseError(f"unknown split {split!r} for {name}: use train, test or all")
