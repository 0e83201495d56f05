"""Training objectives over per-layer readouts (cf. torchtune's ``early_exit_loss.py``).

Notation: hˡ is the residual stream after block ℓ (ℓ = 1..L), R the model's own readout
(final norm + pooling + head), y the targets, CEₗ = CE(R(hˡ), y).

- standard:          CE_L
- aligned:           Σ_{ℓ=1..L} λ_ℓ CE_ℓ,  λ_ℓ = 2ℓ / (L(L+1))  (Σ λ_ℓ = 1; the readout R is shared)
- aligned (paper):   alternate per optimizer step: even steps aligned, odd steps standard
- cos-reg:           CE_L + β Σ_ℓ λ_ℓ (1 − cos(zˡ, zᴸ)),  zˡ the pooled raw feature of layer ℓ
- multi-exit:        Σ_ℓ λ_ℓ CE(Rₗ(hˡ), y) with an own readout Rₗ per layer (joint or alternating)

Every loss is a pure function of a per-layer CE vector (and features); the CE vector comes from
``layer_ce`` = ``training.losses.layer_losses``, the one place that turns readouts into losses. For
language models ``ObjectiveModule`` computes the weighted sum Σ_ℓ w_ℓ CE_ℓ directly with
``training.lm_loss.chunked_lm_loss`` (same value, without L layers of full logits).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.training.losses import dense_ce, layer_losses
from layerwise.stack import LayerStack
from layerwise.training.lm_loss import chunked_lm_loss

OBJECTIVES = ("standard", "aligned", "aligned-joint", "cos-reg", "multi-exit", "multi-exit-joint", "lp", "lp-ft")
FT_OBJECTIVES = ("standard", "aligned", "aligned-joint", "cos-reg", "multi-exit", "multi-exit-joint")
LM_LOSSES = ("chunked", "naive")  # how language models compute Σ_ℓ w_ℓ CE_ℓ (training/lm_loss.py)


# ---------------------------------------------------------------- layer weights


def layer_weights(num_layers: int, scheme: str | Sequence[float] = "linear") -> Tensor:
    """λ_ℓ for ℓ = 1..L, summing to 1.

    linear: λ_ℓ = 2ℓ / (L(L+1)) (deeper layers weigh more, the paper's default);
    uniform: λ_ℓ = 1/L; a sequence: explicit weights, normalised to sum 1.
    """
    if num_layers < 1:
        raise LayerwiseError(f"num_layers={num_layers}: a model needs at least one block")
    if isinstance(scheme, str):
        if scheme == "linear":
            ell = torch.arange(1, num_layers + 1, dtype=torch.float64)
            return 2 * ell / (num_layers * (num_layers + 1))
        if scheme == "uniform":
            return torch.full((num_layers,), 1.0 / num_layers, dtype=torch.float64)
        raise LayerwiseError(f"unknown layer weights {scheme!r}: use linear, uniform or a list of {num_layers} numbers")
    w = torch.as_tensor(list(scheme), dtype=torch.float64)
    if w.numel() != num_layers or (w < 0).any() or w.sum() <= 0:
        raise LayerwiseError(f"explicit layer weights need {num_layers} non-negative numbers with a positive sum, "
                             f"got {list(scheme)}")
    return w / w.sum()


layer_ce = layer_losses  # CE_ℓ = CE(Rₗ(hˡ), y) per layer: the objectives' name for the shared loop


# ---------------------------------------------------------------- objectives (pure)


def standard(ces: Tensor) -> Tensor:
    """CE_L: the last layer only (``ces`` may hold just that one entry)."""
    return ces[-1]


def aligned(ces: Tensor, weights: Tensor) -> Tensor:
    """Σ_ℓ λ_ℓ CE_ℓ over layers 1..L (``ces`` and ``weights`` both (L,))."""
    if ces.shape != weights.shape:
        raise LayerwiseError(f"{ces.numel()} layer losses but {weights.numel()} weights")
    return (weights.to(ces) * ces).sum()


def cosine_gap(feats: Sequence[Tensor]) -> Tensor:
    """1 − mean_i cos(zᵢˡ, zᵢᴸ) for each layer ℓ → (L,); the last entry is 0."""
    last = feats[-1].float()
    return torch.stack([1 - F.cosine_similarity(z.float(), last, dim=-1).mean() for z in feats])


def cos_reg(ce_last: Tensor, feats: Sequence[Tensor], weights: Tensor, beta: float) -> Tensor:
    """CE_L + β Σ_ℓ λ_ℓ (1 − cos(zˡ, zᴸ)); gradients flow into both zˡ and zᴸ."""
    return ce_last + beta * (weights.to(ce_last) * cosine_gap(feats)).sum()


def multi_exit(ces: Tensor, weights: Tensor) -> Tensor:
    """Σ_ℓ λ_ℓ CE(Rₗ(hˡ), y) with an own readout per layer: same formula as ``aligned``, other logits."""
    return aligned(ces, weights)


def phase(objective: str, step: int) -> str:
    """Which loss optimizer step ``step`` (0-based) uses.

    ``aligned`` / ``multi-exit`` alternate: even steps the all-layer loss, odd steps the standard
    last-layer loss (step 0 is aligned). Joint variants and the rest use one loss throughout.
    """
    if objective in ("aligned", "multi-exit"):
        return objective if step % 2 == 0 else "standard"
    if objective == "aligned-joint":
        return "aligned"
    if objective == "multi-exit-joint":
        return "multi-exit"
    if objective in ("standard", "cos-reg"):
        return objective
    raise LayerwiseError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")


# ---------------------------------------------------------------- the trained module


class ObjectiveModule(nn.Module):
    """Wraps the stack (and multi-exit heads) so one ``forward(batch, phase)`` returns the loss.

    Computing the loss inside ``forward`` lets DDP/FSDP see every parameter use. For language models,
    ``lm_loss="chunked"`` computes Σ_ℓ w_ℓ CE_ℓ with ``training.lm_loss.chunked_lm_loss`` (no layer's full
    logits are kept); ``"naive"`` goes through ``layer_losses`` like every other task.
    """

    def __init__(self, stack: LayerStack, exit_heads: nn.ModuleList | None, weights: Tensor, beta: float,
                 lm_loss: str = "chunked"):
        super().__init__()
        if lm_loss not in LM_LOSSES:
            raise LayerwiseError(f"unknown LM loss {lm_loss!r}: use one of {', '.join(LM_LOSSES)}")
        self.stack, self.exit_heads, self.beta = stack, exit_heads, beta
        self.chunked = lm_loss == "chunked" and stack.task == "lm"
        self.register_buffer("weights", weights.float(), persistent=False)

    def weighted_ce(self, readouts: Sequence[nn.Module], hs: Sequence[Tensor], mask: Tensor | None, labels: Tensor,
                    weights: Tensor) -> Tensor:
        """Σ_ℓ w_ℓ CE(Rₗ(hˡ), y), chunked for language models when asked (``aligned`` of ``layer_losses``)."""
        if self.chunked:
            return chunked_lm_loss(readouts, hs, mask, labels, weights)
        return aligned(layer_losses(readouts, hs, mask, labels, self.stack.task), weights)

    def forward(self, batch: dict[str, Tensor], phase: str) -> Tensor:
        states = list(self.stack.states(batch))[1:]  # layers 1..L
        hs, mask, labels, task = [s.h for s in states], states[-1].mask, batch["labels"], self.stack.task
        readout, one = self.stack.readout, self.weights.new_ones(1)
        if phase == "standard":
            if self.chunked:
                return self.weighted_ce([readout], hs[-1:], mask, labels, one)
            return standard(layer_losses([readout], hs[-1:], mask, labels, task))
        if phase == "aligned":
            return self.weighted_ce([readout] * len(hs), hs, mask, labels, self.weights)
        if phase == "multi-exit":
            return self.weighted_ce(list(self.exit_heads), hs, mask, labels, self.weights)
        if phase == "cos-reg":
            ce_last = self.weighted_ce([readout], hs[-1:], mask, labels, one)
            return cos_reg(ce_last, [self.stack.features(s) for s in states], self.weights, self.beta)
        raise LayerwiseError(f"unknown training phase {phase!r}")


__all__ = ["ObjectiveModule", "OBJECTIVES", "FT_OBJECTIVES", "LM_LOSSES", "layer_weights", "dense_ce", "layer_ce",
           "standard", "aligned", "cosine_gap", "cos_reg", "multi_exit", "phase"]
