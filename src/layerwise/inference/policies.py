"""Early-exit policies: small classes that decide, from one layer's readout logits, which samples stop.

- ``ConfidencePolicy``: exit when max softmax pᵐᵃˣ = maxⱼ softmax(z)ⱼ ≥ τ (the paper's rule; τ ∈ (0, 1]).
- ``EntropyPolicy``: exit when H(p) = −Σⱼ pⱼ log pⱼ ≤ τ (DeeBERT, Xin et al. 2020; τ ≥ 0, nats).
- ``PatiencePolicy``: exit when the argmax has been the same for k layers in a row (PABEE, Zhou et al.
  2020; PABEE's patience t "unchanged t times" is k = t + 1 here).

Every policy acts only on layers ``min_layer..max_layer`` (1-based, 1..L); at ``max_layer`` everything left
exits. Policies are stateless except for a per-sample ``memory`` dict of tensors (patience streaks), which the
runner slices together with the batch when it compacts. τ = 1.0 for confidence means "never exit early"
unless the float32 softmax is exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError

Memory = dict[str, Tensor]


@dataclass
class Decision:
    """Per-sample outcome at one layer: who exits, the predicted class and its softmax probability."""

    exit: Tensor  # (B,) bool
    prediction: Tensor  # (B,) long
    confidence: Tensor  # (B,) float32, max softmax probability


class ExitPolicy:
    """Base: ``decide(logits, memory)`` per layer; ``check(stack)`` validates against a model."""

    name = "base"

    def __init__(self, threshold: float, min_layer: int = 1, max_layer: int | None = None):
        self.threshold = threshold
        self.min_layer, self.max_layer = min_layer, max_layer
        if not math.isfinite(threshold):  # NaN compares false with everything, so range checks alone pass it
            raise LayerwiseError(f"{self.name} threshold {threshold} is not a finite number: pass a finite one")
        self._check_threshold()
        if min_layer < 1:
            raise LayerwiseError(f"min_layer={min_layer}: exit layers start at 1")
        if max_layer is not None and min_layer > max_layer:
            raise LayerwiseError(f"min_layer={min_layer} > max_layer={max_layer}: pass min ≤ max")

    def _check_threshold(self) -> None:
        raise NotImplementedError

    def check(self, stack) -> tuple[int, int]:
        """Validate against a stack; returns the resolved (min_layer, max_layer)."""
        L = stack.num_layers
        if stack.task == "regression":
            raise LayerwiseError(f"the {self.name} policy needs class probabilities, but this model has a regression "
                                 "head (one output, no confidence to exit on): truncate it to a fixed depth instead")
        if stack.task != "classification" or not stack.num_classes:
            raise LayerwiseError(f"the {self.name} policy needs a classifier, but this model's task is "
                                 f"{stack.task!r}: load it with a classification head (num_classes)")
        if stack.num_classes < 2:
            raise LayerwiseError(f"the {self.name} policy needs class probabilities, but this model has a "
                                 "regression head (num_classes=1): use a classifier")
        hi = L if self.max_layer is None else self.max_layer
        if not 1 <= self.min_layer <= hi <= L:
            raise LayerwiseError(f"exit layers {self.min_layer}..{hi} out of range: this model has layers 1..{L}")
        return self.min_layer, hi

    def start(self, batch_size: int, device: torch.device) -> Memory:
        return {}

    def decide(self, logits: Tensor, memory: Memory) -> Decision:
        raise NotImplementedError

    def with_threshold(self, threshold: float) -> ExitPolicy:
        """The same policy with another threshold (sweeps, calibration)."""
        return type(self)(threshold, self.min_layer, self.max_layer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, layers={self.min_layer}..{self.max_layer or 'L'})"


def _probs(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    probs = (logits if logits.dtype == torch.float32 else logits.float()).softmax(-1)
    confidence, prediction = probs.max(-1)
    return probs, confidence, prediction


class ConfidencePolicy(ExitPolicy):
    """Exit when max softmax probability ≥ τ."""

    name = "confidence"

    def _check_threshold(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise LayerwiseError(f"confidence threshold {self.threshold} out of range: pass 0 < τ ≤ 1")

    def decide(self, logits: Tensor, memory: Memory) -> Decision:
        _, confidence, prediction = _probs(logits)
        return Decision(confidence >= self.threshold, prediction, confidence)


class EntropyPolicy(ExitPolicy):
    """Exit when the predictive entropy H(p) = −Σ p log p (nats) ≤ τ (DeeBERT)."""

    name = "entropy"

    def _check_threshold(self) -> None:
        if self.threshold < 0.0:
            raise LayerwiseError(f"entropy threshold {self.threshold} out of range: pass τ ≥ 0 (nats)")

    def decide(self, logits: Tensor, memory: Memory) -> Decision:
        probs, confidence, prediction = _probs(logits)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)  # 0·log 0 = 0
        return Decision(entropy <= self.threshold, prediction, confidence)


class PatiencePolicy(ExitPolicy):
    """Exit when the argmax is unchanged over the last k evaluated layers (PABEE with patience k − 1)."""

    name = "patience"

    def _check_threshold(self) -> None:
        if self.threshold < 1 or int(self.threshold) != self.threshold:
            raise LayerwiseError(f"patience k={self.threshold} out of range: pass an integer k ≥ 1")
        self.threshold = int(self.threshold)

    def check(self, stack) -> tuple[int, int]:
        lo, hi = super().check(stack)
        if self.threshold > stack.num_layers:
            raise LayerwiseError(f"patience k={self.threshold} > {stack.num_layers} layers: it could never "
                                 f"trigger, pass k ≤ {stack.num_layers}")
        return lo, hi

    def start(self, batch_size: int, device: torch.device) -> Memory:
        return {"last": torch.full((batch_size,), -1, dtype=torch.long, device=device),
                "streak": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def decide(self, logits: Tensor, memory: Memory) -> Decision:
        _, confidence, prediction = _probs(logits)
        streak = torch.where(prediction == memory["last"], memory["streak"] + 1, 1)
        memory["last"], memory["streak"] = prediction, streak
        return Decision(streak >= self.threshold, prediction, confidence)


POLICIES: dict[str, type[ExitPolicy]] = {p.name: p for p in (ConfidencePolicy, EntropyPolicy, PatiencePolicy)}


def make_policy(name: str, threshold: float, min_layer: int = 1, max_layer: int | None = None) -> ExitPolicy:
    """Build a policy by name: confidence | entropy | patience."""
    if name not in POLICIES:
        raise LayerwiseError(f"unknown exit policy {name!r}: choose one of {', '.join(POLICIES)}")
    return POLICIES[name](threshold, min_layer, max_layer)


__all__ = ["Decision", "ExitPolicy", "ConfidencePolicy", "EntropyPolicy", "PatiencePolicy", "POLICIES",
           "make_policy"]
