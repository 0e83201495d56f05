"""Training objectives over per-layer readouts, and their registry (cf. torchtune's ``early_exit_loss.py``).

Notation: hˡ is the residual stream after block ℓ (ℓ = 1..L), R the model's own readout
(final norm + pooling + head), y the targets, CEₗ = CE(R(hˡ), y).

- standard:          CE_L
- aligned:           Σ_{ℓ=1..L} λ_ℓ CE_ℓ,  λ_ℓ = 2ℓ / (L(L+1))  (Σ λ_ℓ = 1; the readout R is shared)
- aligned (paper):   alternate per optimizer step: even steps aligned, odd steps standard
- cos-reg:           CE_L + β Σ_ℓ λ_ℓ (1 − cos(zˡ, zᴸ)),  zˡ the pooled raw feature of layer ℓ
- multi-exit:        Σ_ℓ λ_ℓ CE(Rₗ(hˡ), y) with an own readout Rₗ per layer (joint or alternating)
- lp / lp-ft:        fit the readout's last Linear on frozen features (a linear probe); lp-ft then trains
                     with the ``ft_objective`` option's objective

An ``Objective`` is a name, a schedule of ``Phase``s (optimizer step s uses phase s mod len) and the stages
around it; a ``Phase`` is a name and a loss of ``LayerLosses``, the per-layer quantities of one batch that the
trainer (``ObjectiveModule``) and ``AlignedTrainer`` each compute their own way. ``register_objective`` adds one
to ``OBJECTIVES``; the trainer, ``AlignedTrainer`` and ``TrainConfig`` read nothing else. The weighting
functions (``standard``, ``aligned``, ``cos_reg``, ...) stay pure functions of tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.training.losses import layer_losses
from layerwise.stack import LayerStack
from layerwise.training.lm_loss import chunked_lm_loss, sampled_layer_weights

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


# ---------------------------------------------------------------- weighting functions (pure)


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


# ---------------------------------------------------------------- phases and objectives


class LayerLosses(Protocol):
    """The per-layer quantities of one batch a phase's loss combines, computed only when asked for."""

    weights: Tensor  # λ_ℓ, ℓ = 1..L (the ``layer_weights`` option)
    beta: float  # the ``cos_beta`` option

    def ce(self, weights: Tensor, exit_heads: bool = False) -> Tensor:
        """Σ_i wᵢ CE_{L−n+i} over the last n = len(weights) layers, through the shared readout (or, with
        ``exit_heads``, each layer's own exit head)."""

    def features(self) -> list[Tensor]:
        """zˡ, the pooled raw feature of each layer ℓ = 1..L."""


@dataclass(frozen=True)
class Phase:
    """The loss of one optimizer step: a name and a function of the batch's ``LayerLosses``."""

    name: str
    loss: Callable[[LayerLosses], Tensor]
    exit_heads: bool = False  # reads each layer's own exit head: the model gets exit heads when it has none


@dataclass(frozen=True)
class Objective:
    """A training objective: optimizer step s uses ``schedule[s mod len(schedule)]``; ``linear_probe`` fits the
    readout's last Linear on frozen features first; ``then_ft_objective`` then trains with the schedule of the
    objective named by the ``ft_objective`` option (lp-ft)."""

    name: str
    schedule: tuple[Phase, ...] = ()
    linear_probe: bool = False
    then_ft_objective: bool = False

    def phase(self, step: int) -> Phase:
        """The phase of optimizer step ``step`` (0-based)."""
        if not self.schedule:
            raise LayerwiseError(f"objective {self.name!r} takes no gradient steps of its own")
        return self.schedule[step % len(self.schedule)]

    @property
    def trains(self) -> bool:
        """Whether the objective takes gradient steps (its own or the ``ft_objective``'s)."""
        return bool(self.schedule) or self.then_ft_objective

    @property
    def exit_heads(self) -> bool:
        """Whether some phase reads the per-layer exit heads."""
        return any(p.exit_heads for p in self.schedule)

    @property
    def leaves_parameters_unused(self) -> bool:
        """Whether some steps leave the exit heads unused (DDP must then look for unused parameters)."""
        return len({p.exit_heads for p in self.schedule}) > 1


OBJECTIVES: dict[str, Objective] = {}
PHASES: dict[str, Phase] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` (and the phases of its schedule) to the registry; names are unique."""
    if objective.name in OBJECTIVES:
        raise LayerwiseError(f"objective {objective.name!r} is already registered")
    clashes = [p.name for p in objective.schedule if PHASES.get(p.name, p) is not p]
    if clashes:
        raise LayerwiseError(f"another phase is already registered as {', '.join(map(repr, clashes))}")
    PHASES.update({p.name: p for p in objective.schedule})
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    """The registered objective ``name``."""
    if name not in OBJECTIVES:
        raise LayerwiseError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def get_phase(phase: Phase | str) -> Phase:
    """A phase, or the registered phase of that name."""
    if isinstance(phase, Phase):
        return phase
    if phase not in PHASES:
        raise LayerwiseError(f"unknown training phase {phase!r}: use one of {', '.join(PHASES)}")
    return PHASES[phase]


def fine_tuning_objectives() -> list[str]:
    """The names an ``ft_objective`` may take: objectives with a schedule of their own."""
    return [name for name, o in OBJECTIVES.items() if o.schedule]


def phase(objective: str, step: int) -> str:
    """The name of the phase optimizer step ``step`` (0-based) of ``objective`` uses."""
    return get_objective(objective).phase(step).name


def _last_ce(t: LayerLosses) -> Tensor:
    return t.ce(t.weights.new_ones(1))


STANDARD = Phase("standard", lambda t: standard(_last_ce(t).reshape(1)))
ALIGNED = Phase("aligned", lambda t: t.ce(t.weights))
MULTI_EXIT = Phase("multi-exit", lambda t: t.ce(t.weights, exit_heads=True), exit_heads=True)
COS_REG = Phase("cos-reg", lambda t: cos_reg(_last_ce(t), t.features(), t.weights, t.beta))

for _objective in (
    Objective("standard", (STANDARD,)),
    Objective("aligned", (ALIGNED, STANDARD)),  # the paper's alternation, aligned first
    Objective("aligned-joint", (ALIGNED,)),
    Objective("cos-reg", (COS_REG,)),
    Objective("multi-exit", (MULTI_EXIT, STANDARD)),
    Objective("multi-exit-joint", (MULTI_EXIT,)),
    Objective("lp", linear_probe=True),
    Objective("lp-ft", linear_probe=True, then_ft_objective=True),
):
    register_objective(_objective)


# ---------------------------------------------------------------- the trained module


class StackLosses:
    """``LayerLosses`` of one batch through the layer stack (all L blocks run once)."""

    def __init__(self, module: ObjectiveModule, batch: dict[str, Tensor]):
        self.module, self.weights, self.beta = module, module.weights, module.beta
        self.states = list(module.stack.states(batch))[1:]  # layers 1..L
        self.hs, self.mask, self.labels = [s.h for s in self.states], self.states[-1].mask, batch["labels"]

    def ce(self, weights: Tensor, exit_heads: bool = False) -> Tensor:
        m, n = self.module, len(weights)
        if exit_heads and m.exit_heads is None:
            raise LayerwiseError("this objective reads per-layer exit heads and the model has none")
        readouts = list(m.exit_heads)[-n:] if exit_heads else [m.stack.readout] * n
        if m.aligned_layers is not None and n == len(self.hs) > 1:  # an unbiased draw of k layers + the last
            weights = sampled_layer_weights(weights, m.aligned_layers, m.layer_draws)
        if m.chunked:
            return chunked_lm_loss(readouts, self.hs[-n:], self.mask, self.labels, weights)
        return aligned(layer_losses(readouts, self.hs[-n:], self.mask, self.labels, m.stack.task), weights)

    def features(self) -> list[Tensor]:
        return [self.module.stack.features(s) for s in self.states]


class ObjectiveModule(nn.Module):
    """Wraps the stack (and multi-exit heads) so one ``forward(batch, phase)`` returns the phase's loss.

    Computing the loss inside ``forward`` lets DDP/FSDP see every parameter use. For language models,
    ``lm_loss="chunked"`` computes Σ_ℓ w_ℓ CE_ℓ with ``training.lm_loss.chunked_lm_loss`` (no layer's full
    logits are kept); ``"naive"`` goes through ``layer_losses`` like every other task.
    ``aligned_layers`` k: every loss over all L layers reads out only the last layer and k drawn ones, with the
    unbiased weights of ``training.lm_loss.sampled_layer_weights``. The draws of optimizer step s come from a
    generator seeded with (``seed``, s) (``draw_for_step``), so a resumed run draws what the killed one would have.
    """

    def __init__(self, stack: LayerStack, exit_heads: nn.ModuleList | None, weights: Tensor, beta: float,
                 lm_loss: str = "chunked", aligned_layers: int | None = None, seed: int = 0):
        super().__init__()
        if lm_loss not in LM_LOSSES:
            raise LayerwiseError(f"unknown LM loss {lm_loss!r}: use one of {', '.join(LM_LOSSES)}")
        if aligned_layers is not None:
            sampled_layer_weights(weights.float(), aligned_layers)  # refuses a k out of range before training
        self.aligned_layers, self.seed, self.layer_draws = aligned_layers, seed, torch.Generator().manual_seed(seed)
        self.stack, self.exit_heads, self.beta = stack, exit_heads, beta
        self.chunked = lm_loss == "chunked" and stack.task == "lm"
        self.register_buffer("weights", weights.float(), persistent=False)

    def draw_for_step(self, step: int) -> None:
        """Reseed the layer draws for optimizer step ``step``: no state to checkpoint, bitwise on resume."""
        from layerwise.training.checkpointing import step_seed

        self.layer_draws.manual_seed(step_seed(self.seed, step))

    def forward(self, batch: dict[str, Tensor], phase: Phase | str) -> Tensor:
        return get_phase(phase).loss(StackLosses(self, batch))


__all__ = ["LayerLosses", "Phase", "Objective", "OBJECTIVES", "PHASES", "STANDARD", "ALIGNED", "MULTI_EXIT", "COS_REG",
           "register_objective", "get_objective", "get_phase", "fine_tuning_objectives", "phase", "ObjectiveModule",
           "StackLosses", "LM_LOSSES", "layer_weights", "standard", "aligned", "cosine_gap",
           "cos_reg"]
