"""Sample-wise cosine similarity between layers (the project's main measure).

Each layer is centred by its global mean over samples, then
    COS_i(a, b) = ⟨x_i - μ_a, y_i - μ_b⟩ / (‖x_i - μ_a‖ ‖y_i - μ_b‖),   COS(a, b) = mean_i COS_i.
A sample whose centred vector has zero norm has no cosine: it is NaN per sample, left out of the
mean (with a warning), and a layer with no valid sample gives NaN.
"""

import numpy as np
import torch

from layerwise.measures._util import f64, same_n
from layerwise.measures.base import Invariances, Measure
from layerwise.measures.streaming import CosineAccumulator, check_equal_widths


def cosine_matrix(feats: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """In-memory COS: (mean L×L matrix, per-sample COS vs the last layer (N, L))."""
    check_equal_widths(feats)
    acc = CosineAccumulator([f64(x).mean(0) for x in feats])
    for start in range(0, feats[0].shape[0], 4096):  # chunks bound the (L, B, d) float64 temporary
        acc.update([x[start:start + 4096] for x in feats])
    return acc.result()


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean sample-wise cosine of globally centred features of two equal-width layers."""
    same_n(x, y)
    return float(cosine_matrix([x, y])[0][0, 1])


def cosine_pairs(feats_a, feats_b=None) -> np.ndarray:
    """All-layer COS matrix (cross block when feats_b is given)."""
    feats = list(feats_a) + list(feats_b or [])
    m = cosine_matrix(feats)[0]
    return m if feats_b is None else m[:len(feats_a), len(feats_a):]


MEASURES = [
    Measure("cos", cosine, cosine_pairs, Invariances(isotropic_scaling=True, translation=True),
            "sample-wise cosine of globally centred features, mean over samples", equal_width=True),
]
