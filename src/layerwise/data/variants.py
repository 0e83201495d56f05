"""Data set variants named in the data spec: a corrupted CIFAR-10 and a subset of the classes.

- ``cifar10-c:CORRUPTION:SEVERITY``: CIFAR-10 (any split, usually test) under one CIFAR-10-C corruption
  (``data.corruptions``) at severity 1–5, with the fixed corruption seed 0 (image i of the split always gets
  the same noise, whatever ``limit`` or ``seed`` picks it), e.g. ``cifar10-c:gaussian_noise:3``.
- ``NAME:classes=A-B`` (or ``classes=3,5,7``): only those classes of a labelled data set, relabelled 0..k−1 in
  the order given (the class names follow), e.g. ``cifar10:classes=0-4`` and ``cifar10:classes=5-9`` for a
  split-CIFAR transfer. Both combine: ``cifar10-c:fog:2:classes=5-9``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerwise.errors import LayerwiseError

CORRUPTED = "cifar10-c"
CORRUPTION_SEED = 0


@dataclass(frozen=True)
class Variant:
    """A parsed data spec: the base data set and what is done to it."""

    base: str
    corruption: str | None = None
    severity: int | None = None
    classes: tuple[int, ...] | None = None


def parse_classes(text: str, spec: str) -> tuple[int, ...]:
    """``0-4`` → (0, 1, 2, 3, 4); ``3,5,7`` → (3, 5, 7)."""
    try:
        if "-" in text:
            low, high = (int(p) for p in text.split("-"))
            classes = tuple(range(low, high + 1))
        else:
            classes = tuple(int(p) for p in text.split(","))
    except ValueError:
        classes = ()
    if not classes or min(classes) < 0 or len(set(classes)) != len(classes):
        raise LayerwiseError(f"data {spec!r}: classes={text} is no class list: pass classes=A-B or classes=1,3,5 "
                             "(distinct class indices)")
    return classes


def parse_variant(spec: str) -> Variant:
    """The variant a data spec names; a spec with neither part is returned as its own base."""
    base, classes = spec, None
    head, colon, last = spec.rpartition(":")
    if colon and last.lower().startswith("classes="):
        base, classes = head, parse_classes(last[len("classes="):], spec)
    if not base.lower().startswith(CORRUPTED + ":") and base.lower() != CORRUPTED:
        return Variant(base, classes=classes)
    from layerwise.data.corruptions import CORRUPTIONS, check_corruption

    parts = base.split(":")
    if len(parts) != 3:
        raise LayerwiseError(f"data {spec!r}: pass {CORRUPTED}:CORRUPTION:SEVERITY, e.g. {CORRUPTED}:gaussian_noise:3 "
                             f"(corruptions: {', '.join(CORRUPTIONS)})")
    _, name, severity = parts
    if not severity.isdigit():
        raise LayerwiseError(f"data {spec!r}: severity {severity!r} is no number: pass 1 to 5")
    try:
        check_corruption(name, int(severity))
    except LayerwiseError as e:
        raise LayerwiseError(f"data {spec!r}: {e}") from None
    return Variant("cifar10", name, int(severity), classes)


def keep_classes(ds, classes: tuple[int, ...], spec: str):
    """(the examples of ``classes`` only, relabelled 0..k−1 in the order given; their indices in ``ds``)."""
    if ds.labels is None or ds.regression or ds.class_names is None:
        raise LayerwiseError(f"data {spec!r}: classes= picks classes of a labelled classification data set, and "
                             f"{ds.name} has none")
    if max(classes) >= len(ds.class_names):
        raise LayerwiseError(f"data {spec!r}: {ds.name} has classes 0..{len(ds.class_names) - 1}, not "
                             f"{max(classes)}")
    wanted = torch.tensor(classes)
    index = torch.nonzero(torch.isin(ds.labels, wanted)).flatten()
    subset = ds.subset(index)
    relabel = torch.full((len(ds.class_names),), -1, dtype=torch.long)
    relabel[wanted] = torch.arange(len(classes))
    subset.labels = relabel[subset.labels]
    subset.class_names = [ds.class_names[c] for c in classes]
    subset.num_classes = len(classes)
    subset.name = spec
    return subset, index


def load_variant(variant: Variant, spec: str, full, limit: int | None, seed: int):
    """``full`` (the base data set's split) made into the variant: classes kept, ``limit`` examples of a seeded
    permutation (as ``load._take``), then each kept image corrupted with the seed of its index in ``full``."""
    ds, index = (full, torch.arange(len(full))) if variant.classes is None else keep_classes(full, variant.classes,
                                                                                            spec)
    if len(ds) == 0:
        raise LayerwiseError(f"data {spec!r} has no examples: check the classes and the split")
    if limit is not None:
        pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]
        ds, index = ds.subset(pick), index[pick]
    if variant.corruption is not None:
        from layerwise.data.corruptions import corrupt_images

        if ds.kind != "image":
            raise LayerwiseError(f"data {spec!r}: corruptions apply to images, and {variant.base} is {ds.kind} data")
        ds.images = corrupt_images(ds.images, variant.corruption, variant.severity, index=index.tolist(),
                                   seed=CORRUPTION_SEED)
    ds.name = spec
    return ds


__all__ = ["CORRUPTED", "CORRUPTION_SEED", "Variant", "keep_classes", "load_variant", "parse_classes", "parse_variant"]
