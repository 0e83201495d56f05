"""What a measure declares about itself: its functions, and its invariances as named fields (cf. ReSi)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Invariances:
    """Transformations T of one layer's features X (N × d) with m(T(X), Y) = m(X, Y)."""

    orthogonal: bool = False  # X Q, Q orthogonal
    isotropic_scaling: bool = False  # s X, s > 0
    translation: bool = False  # X + 1 bᵀ
    invertible_linear: bool = False  # X A, A invertible
    permutation: bool = False  # permuting the d feature columns

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class Measure:
    """A similarity measure. ``fn(X, Y, **options) -> float``; ``matrix(feats_a, feats_b | None, **options)``
    gives all layer pairs at once, reusing per-layer work (rows: feats_a; feats_b=None: within one model)."""

    name: str
    fn: Callable[..., float]
    matrix: Callable[..., np.ndarray]
    invariant_to: Invariances
    description: str
    higher_is_more_similar: bool = True
    needs_pairwise: bool = False  # needs N × N structure: runs on a subsample of at most sample_cap rows
    equal_width: bool = False  # both layers must have the same width d
    symmetric: bool = True

    @property
    def invariances(self) -> frozenset[str]:
        """The names of the transformations this measure is invariant to."""
        return self.invariant_to.names


def pairwise(prepare: Callable, pair: Callable, symmetric: bool = True) -> Callable[..., np.ndarray]:
    """Matrix from a per-layer ``prepare`` (done once per layer) and a cheap ``pair`` on prepared layers."""

    def matrix(feats_a, feats_b=None, **options) -> np.ndarray:
        pa = [prepare(x, **options) for x in feats_a]
        pb = pa if feats_b is None else [prepare(x, **options) for x in feats_b]
        m = np.empty((len(pa), len(pb)))
        for i in range(len(pa)):
            for j in range(len(pb)):
                if feats_b is None and symmetric and j < i:
                    m[i, j] = m[j, i]  # within-model and symmetric: each pair once
                else:
                    m[i, j] = pair(pa[i], pb[j])
        return m

    return matrix


# The invariance classes most measures share.
SIMILARITY_TRANSFORMS = Invariances(orthogonal=True, isotropic_scaling=True, translation=True, permutation=True)
