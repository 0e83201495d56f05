"""Calibration of a classifier's softmax: ECE, MCE, Brier score, NLL, and temperature scaling.

With confidence cᵢ = maxₐ pᵢₐ and bins B_m = (m−1)/M < c ≤ m/M (M = 15 equal-width bins, c = 0 in the first),
    ECE = Σ_m |B_m|/N · |acc(B_m) − conf(B_m)|,   MCE = max over non-empty bins of |acc(B_m) − conf(B_m)|
(Guo et al., "On Calibration of Modern Neural Networks", 2017); Brier = 1/N Σᵢ Σₐ (pᵢₐ − 1[yᵢ = a])²;
NLL = −1/N Σᵢ log pᵢ,yᵢ. Temperature scaling divides the logits by the T > 0 that minimises the NLL on a
validation split (scipy's bounded scalar minimiser over log T). scikit-learn's ``calibration_curve`` bins the
probability of one class of a binary problem, not the confidence, so these few formulas are written here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.errors import LayerwiseError

BINS = 15


def check_classes(logits: Tensor, labels: Tensor) -> None:
    """Calibration needs class probabilities: (N, C) logits with C ≥ 2 and labels in 0..C−1."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise LayerwiseError(f"calibration needs class logits (N, C ≥ 2), got shape {tuple(logits.shape)}: "
                             "a regression head (one output) has no classes to calibrate")
    if logits.shape[0] == 0 or logits.shape[0] != labels.shape[0]:
        raise LayerwiseError(f"{logits.shape[0]} logit rows for {labels.shape[0]} labels: pass one row per label")


def reliability(probs: Tensor, labels: Tensor, bins: int = BINS) -> dict[str, list[float]]:
    """Per equal-width confidence bin: its count, accuracy and mean confidence (NaN for an empty bin)."""
    conf, pred = probs.double().max(dim=1)
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)  # (m−1)/M < c ≤ m/M → bin m−1
    correct = (pred == labels).double()
    count = torch.bincount(index, minlength=bins).double()
    acc = torch.bincount(index, weights=correct, minlength=bins) / count
    mean_conf = torch.bincount(index, weights=conf, minlength=bins) / count
    return {"edges": torch.linspace(0, 1, bins + 1).tolist(), "count": count.tolist(), "accuracy": acc.tolist(),
            "confidence": mean_conf.tolist()}


def ece_mce(probs: Tensor, labels: Tensor, bins: int = BINS) -> tuple[float, float]:
    """(ECE, MCE) over ``bins`` equal-width confidence bins (see the module)."""
    r = reliability(probs, labels, bins)
    count, gap = torch.tensor(r["count"]), (torch.tensor(r["accuracy"]) - torch.tensor(r["confidence"])).abs()
    filled = count > 0
    return float((count[filled] * gap[filled]).sum() / count.sum()), float(gap[filled].max())


def brier(probs: Tensor, labels: Tensor) -> float:
    """Multi-class Brier score: 1/N Σᵢ Σₐ (pᵢₐ − 1[yᵢ = a])²."""
    onehot = F.one_hot(labels.long(), probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(1).mean())


def calibration(logits: Tensor, labels: Tensor, temperature: float = 1.0, bins: int = BINS) -> dict:
    """Accuracy, ECE, MCE, Brier, NLL and the reliability bins of softmax(logits / T)."""
    check_classes(logits, labels)
    z = logits.double() / temperature
    probs = z.softmax(1)
    ece, mce = ece_mce(probs, labels, bins)
    return {"temperature": temperature, "accuracy": float((probs.argmax(1) == labels).double().mean()), "ece": ece,
            "mce": mce, "brier": brier(probs, labels), "nll": float(F.cross_entropy(z, labels.long())),
            "reliability": reliability(probs, labels, bins)}


def fit_temperature(logits: Tensor, labels: Tensor, bounds: tuple[float, float] = (1e-2, 1e2)) -> float:
    """argmin_T NLL(softmax(logits / T), labels) over T in ``bounds`` (bounded Brent search on log T)."""
    from scipy.optimize import minimize_scalar

    check_classes(logits, labels)
    z, y = logits.double(), labels.long()
    res = minimize_scalar(lambda log_t: float(F.cross_entropy(z / math.exp(log_t), y)),
                          bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def temperature_scaling(val_logits: Tensor, val_labels: Tensor, test_logits: Tensor, test_labels: Tensor) -> dict:
    """Test calibration before and after temperature scaling fitted on the validation logits."""
    t = fit_temperature(val_logits, val_labels)
    return {"temperature": t, "before": calibration(test_logits, test_labels),
            "after": calibration(test_logits, test_labels, t)}


def layer_calibration(val_logits: Tensor, val_labels: Tensor, test_logits: Tensor, test_labels: Tensor) -> dict:
    """ECE, and ECE after a per-layer temperature, of the readout after every layer: (L, N, C) logits in."""
    out: dict[str, list[float]] = {"accuracy": [], "ece": [], "ece_temperature_scaled": [], "temperature": []}
    for val, test in zip(val_logits, test_logits, strict=True):
        c = temperature_scaling(val, val_labels, test, test_labels)
        out["accuracy"].append(c["before"]["accuracy"])
        out["ece"].append(c["before"]["ece"])
        out["ece_temperature_scaled"].append(c["after"]["ece"])
        out["temperature"].append(c["temperature"])
    return out
