"""Early-exit policies and their registry: each policy turns one layer's readout logits into a per-row score
(``ExitPolicy.scores``) that a row exits on when it reaches the threshold τ (from above or below).

- ``ConfidencePolicy``: exit when max softmax pᵐᵃˣ = maxⱼ softmax(z)ⱼ ≥ τ (the paper's rule; τ ∈ (0, 1]).
- ``EntropyPolicy``: exit when H(p) = −Σⱼ pⱼ log pⱼ ≤ τ (DeeBERT, Xin et al. 2020; τ ≥ 0, nats).
- ``PatiencePolicy``: exit when the argmax has been the same for k layers in a row (PABEE, Zhou et al.
  2020; PABEE's patience t "unchanged t times" is k = t + 1 here).

Two policies decide from the hidden state alone (``reads_logits = False``), so per-token exit runs the readout
once per token, at the exit layer, instead of at every layer a token passes (decoders only):
- ``SaturationPolicy``: exit when cos(hˡ, hˡ⁻¹) ≥ τ (CALM's hidden-state saturation, Schuster et al. 2022).
- ``ClassifierPolicy``: exit when σ(wₗ·hˡ + bₗ) ≥ τ, a per-layer linear map trained to predict that the
  readout at ℓ already agrees with the last layer's argmax (``inference.exit_classifier``).

``check_every`` k evaluates the signal only at layers min_layer, min_layer + k, min_layer + 2k, … (and
max_layer, where everything left exits).

``register_policy`` adds a policy class to ``POLICIES``; classification exit (``runner``), simulation and
calibration (``simulate``) and per-token exit (``token_exit``) read nothing else.

Every policy acts only on layers ``min_layer..max_layer`` (1-based, 1..L); at ``max_layer`` everything left
exits. Policies are stateless except for a per-sample ``memory`` dict of tensors (patience streaks), which the
runner slices together with the batch when it compacts. τ = 1.0 for confidence means "never exit early"
unless the float32 softmax is exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.errors import LayerwiseError

Memory = dict[str, Tensor]


@dataclass
class Decision:
    """Per-sample outcome at one layer: who exits, the predicted class and its softmax probability."""

    exit: Tensor  # (B,) bool
    prediction: Tensor  # (B,) long
    confidence: Tensor  # (B,) float32, max softmax probability


def probabilities(logits: Tensor) -> Tensor:
    """softmax(z) in float32 (or the logits' wider type)."""
    return (logits if logits.dtype == torch.float32 else logits.float()).softmax(-1)


def entropy(logits: Tensor) -> Tensor:
    """H(p) = −Σⱼ pⱼ log pⱼ in nats per row, p = softmax(z), with 0·log 0 = 0."""
    probs = probabilities(logits)
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


class ExitPolicy:
    """A row exits at a layer when ``scores(logits, memory)`` ≥ τ (``exit_above``) or ≤ τ (otherwise).

    Subclasses set ``name``, ``exit_above`` and ``never_early`` (the τ at which nobody exits before
    ``max_layer``: the safe end of a calibration grid), and define ``check_threshold`` and ``scores``.
    Stateful policies keep per-row tensors in ``memory`` (``start``), which the runner slices with the batch.
    """

    name = "base"
    exit_above = True
    never_early: float = math.nan
    reads_logits = True  # False: ``state_scores`` decides from hidden states; the readout runs only on exit
    needs_classifier = False  # True: the constructor takes ``classifier``, the model's trained exit classifier

    def __init__(self, threshold: float, min_layer: int = 1, max_layer: int | None = None, check_every: int = 1):
        self.threshold = threshold
        self.min_layer, self.max_layer, self.check_every = min_layer, max_layer, check_every
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise LayerwiseError(f"`check_every` {check_every!r}: pass an integer k ≥ 1 (evaluate every k-th layer)",
                                 option="check_every")
        if not math.isfinite(threshold):  # NaN compares false with everything, so range checks alone pass it
            raise LayerwiseError(f"{self.name} threshold {threshold} is not a finite number: pass a finite one")
        self.check_threshold()
        if min_layer < 1:
            raise LayerwiseError(f"min_layer={min_layer}: exit layers start at 1")
        if max_layer is not None and min_layer > max_layer:
            raise LayerwiseError(f"min_layer={min_layer} > max_layer={max_layer}: pass min ≤ max")

    def check_threshold(self) -> None:
        """Refuse (``LayerwiseError``) a threshold outside the policy's range."""
        raise NotImplementedError

    def scores(self, logits: Tensor, memory: Memory) -> Tensor:
        """The per-row score (B,) of one layer's logits (B, C) that τ is compared against."""
        raise NotImplementedError

    def evaluates(self, layer: int, max_layer: int) -> bool:
        """Whether the signal is evaluated at ``layer`` (1-based): every ``check_every``-th layer from
        min_layer on, and always at max_layer."""
        return layer == max_layer or (layer >= self.min_layer and (layer - self.min_layer) % self.check_every == 0)

    def state_scores(self, h: Tensor, previous: Tensor, layer: int, memory: Memory) -> Tensor:
        """The per-row score (B,) from hˡ and hˡ⁻¹ of the last position, each (B, D) (``reads_logits`` False)."""
        raise NotImplementedError

    def exits(self, score: Tensor) -> Tensor:
        """(B,) bool: the score reaches τ (from above or below, ``exit_above``)."""
        return score >= self.threshold if self.exit_above else score <= self.threshold

    def check_decoder(self, stack) -> None:
        """Refuse (``LayerwiseError``) a decoder this policy cannot run on (per-token exit)."""

    def check(self, stack) -> tuple[int, int]:
        """Validate against a classifier's stack; returns the resolved (min_layer, max_layer)."""
        L = stack.num_layers
        if not self.reads_logits:
            raise LayerwiseError(f"the {self.name} policy decides per-token exit of language models only: use "
                                 "confidence, entropy or patience for a classifier")
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

    def check_window(self, lo: int, hi: int) -> None:
        """Refuse a threshold that can never trigger when only layers lo..hi are evaluated."""

    def start(self, batch_size: int, device: torch.device) -> Memory:
        """The per-row memory before the first layer (stateless policies: none)."""
        return {}

    def decide(self, logits: Tensor, memory: Memory) -> Decision:
        """Who exits at this layer (score against τ), with the argmax and max softmax probability."""
        confidence, prediction = probabilities(logits).max(-1)
        return Decision(self.exits(self.scores(logits, memory)), prediction, confidence)

    def grid(self, scores: Tensor, points: int = 201) -> list[float]:
        """Candidate thresholds from the (L, N) scores of every layer, safest first: the distinct quantiles that
        are valid thresholds (so the grid adapts to the model) plus ``never_early``."""
        q = torch.quantile(scores.flatten().double(), torch.linspace(0, 1, points, dtype=torch.double)).tolist()
        return sorted({self.never_early, *[v for v in q if self.accepts(v)]}, reverse=self.exit_above)

    def accepts(self, threshold: float) -> bool:
        """Whether ``threshold`` is a valid τ of this policy."""
        try:
            self.with_threshold(threshold)
        except LayerwiseError:
            return False
        return True

    def with_threshold(self, threshold: float) -> ExitPolicy:
        """The same policy with another threshold (sweeps, calibration)."""
        return type(self)(threshold, self.min_layer, self.max_layer, **self.options())

    def options(self) -> dict:
        """The constructor's keyword options besides threshold and layers (``with_threshold`` keeps them)."""
        return {"check_every": self.check_every}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, layers={self.min_layer}..{self.max_layer or 'L'})"


POLICIES: dict[str, type[ExitPolicy]] = {}


def register_policy(policy: type[ExitPolicy]) -> type[ExitPolicy]:
    """Add an ``ExitPolicy`` subclass to ``POLICIES`` under its ``name`` (a class decorator); names are unique."""
    if policy.name in POLICIES:
        raise LayerwiseError(f"exit policy {policy.name!r} is already registered")
    POLICIES[policy.name] = policy
    return policy


def make_policy(name: str, threshold: float, min_layer: int = 1, max_layer: int | None = None,
                **options) -> ExitPolicy:
    """Build a registered policy by name (``POLICIES``: confidence | entropy | patience | saturation |
    classifier | ...); ``options``: ``check_every``, and ``classifier`` for the classifier policy."""
    if name not in POLICIES:
        raise LayerwiseError(f"unknown exit policy {name!r}: choose one of {', '.join(POLICIES)}")
    return POLICIES[name](threshold, min_layer, max_layer, **options)


@register_policy
class ConfidencePolicy(ExitPolicy):
    """Exit when max softmax probability ≥ τ."""

    name, never_early = "confidence", 1.0

    def check_threshold(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise LayerwiseError(f"confidence threshold {self.threshold} out of range: pass 0 < τ ≤ 1")

    def scores(self, logits: Tensor, memory: Memory) -> Tensor:
        return probabilities(logits).max(-1).values


@register_policy
class EntropyPolicy(ExitPolicy):
    """Exit when the predictive entropy H(p) = −Σ p log p (nats) ≤ τ (DeeBERT)."""

    name, exit_above, never_early = "entropy", False, 0.0

    def check_threshold(self) -> None:
        if self.threshold < 0.0:
            raise LayerwiseError(f"entropy threshold {self.threshold} out of range: pass τ ≥ 0 (nats)")

    def scores(self, logits: Tensor, memory: Memory) -> Tensor:
        return entropy(logits)


@register_policy
class PatiencePolicy(ExitPolicy):
    """Exit when the argmax is unchanged over the last k evaluated layers (PABEE with patience k − 1)."""

    name = "patience"

    def check_threshold(self) -> None:
        if self.threshold < 1 or int(self.threshold) != self.threshold:
            raise LayerwiseError(f"patience k={self.threshold} out of range: pass an integer k ≥ 1")
        self.threshold = int(self.threshold)

    def check(self, stack) -> tuple[int, int]:
        lo, hi = super().check(stack)
        if self.threshold > stack.num_layers:
            raise LayerwiseError(f"patience k={self.threshold} > {stack.num_layers} layers: it could never "
                                 f"trigger, pass k ≤ {stack.num_layers}")
        return lo, hi

    def check_window(self, lo: int, hi: int) -> None:
        evaluated = sum(self.evaluates(ell, hi) for ell in range(lo, hi + 1))
        if self.threshold > evaluated:
            raise LayerwiseError(f"patience k={self.threshold} can never trigger on the {evaluated} layers evaluated "
                                 f"between layers {lo} and {hi}: pass k ≤ {evaluated}")

    def start(self, batch_size: int, device: torch.device) -> Memory:
        return {"last": torch.full((batch_size,), -1, dtype=torch.long, device=device),
                "streak": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def scores(self, logits: Tensor, memory: Memory) -> Tensor:
        """The streak: layers in a row (this one included) with the same argmax; updates ``memory``."""
        prediction = probabilities(logits).max(-1).indices
        streak = torch.where(prediction == memory["last"], memory["streak"] + 1, 1)
        memory["last"], memory["streak"] = prediction, streak
        return streak

    def grid(self, scores: Tensor, points: int = 201) -> list[float]:
        """Every k from L (never early) down to 1."""
        return [float(k) for k in range(scores.shape[0], 0, -1)]


@register_policy
class SaturationPolicy(ExitPolicy):
    """Exit when cos(hˡ, hˡ⁻¹) ≥ τ: the block changed the state too little to matter (CALM's saturation)."""

    name, never_early, reads_logits = "saturation", 1.0, False

    def check_threshold(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise LayerwiseError(f"saturation threshold {self.threshold} out of range: pass −1 ≤ τ ≤ 1 (a cosine)")

    def state_scores(self, h: Tensor, previous: Tensor, layer: int, memory: Memory) -> Tensor:
        return F.cosine_similarity(h.float(), previous.float(), dim=-1)


@register_policy
class ClassifierPolicy(ExitPolicy):
    """Exit when the trained exit classifier's σ(wₗ·hˡ + bₗ) ≥ τ (``inference.exit_classifier``)."""

    name, never_early, reads_logits, needs_classifier = "classifier", 1.0, False, True

    def __init__(self, threshold: float, min_layer: int = 1, max_layer: int | None = None, check_every: int = 1,
                 classifier=None):
        self.classifier = classifier
        super().__init__(threshold, min_layer, max_layer, check_every)  # the threshold and layers first
        if classifier is None:
            raise LayerwiseError("the classifier policy needs a trained exit classifier: make one with "
                                 "inference.exit_classifier.train_exit_classifier")

    def check_threshold(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise LayerwiseError(f"classifier threshold {self.threshold} out of range: pass 0 ≤ τ ≤ 1 (a probability)")

    def check_decoder(self, stack) -> None:
        self.classifier.check(stack)

    def state_scores(self, h: Tensor, previous: Tensor, layer: int, memory: Memory) -> Tensor:
        return self.classifier.probability(h, layer)

    def options(self) -> dict:
        return {**super().options(), "classifier": self.classifier}


__all__ = ["Decision", "ExitPolicy", "ConfidencePolicy", "EntropyPolicy", "PatiencePolicy", "SaturationPolicy",
           "ClassifierPolicy", "POLICIES", "Memory",
           "register_policy", "make_policy", "probabilities", "entropy"]
