"""LayerSkip's layer dropout (Elhoushi et al. 2024, "LayerSkip: Enabling Early Exit Inference and Self-Speculative
Decoding", §4.1): in training, block ℓ is skipped (its input passed on unchanged) with a probability that rises
with depth, so later layers learn to do without their predecessors and earlier ones to finish the prediction.

The schedule (``layerskip_rates``) is the paper's per-layer scaling with the time scaling S(t) = 1 of its
fine-tuning and continual-pretraining runs:

    p_ℓ = p_max · D(ℓ),   D(ℓ) = e^{ℓ·ln 2 / (L−1)} − 1 = 2^{ℓ/(L−1)} − 1,   ℓ = 0 … L−1 (0-based blocks),

so the first block is never skipped and the last one with probability p_max (a one-block model: p_max).

``LayerDropout`` draws one skip mask per optimizer step from a generator seeded with (seed, step), as the
aligned-layers draws are (``ObjectiveModule.draw_for_step``): a resumed run draws what the killed one would have,
with no state to checkpoint. Every micro-batch of the step uses the step's mask. Blocks are skipped only where
gradients are being recorded (the trainer's forward passes): evaluation, probing and inference are unaffected.
"""

from __future__ import annotations

import math

import torch

from layerwise.errors import LayerwiseError
from layerwise.training.checkpointing import step_seed
from layerwise.stack import LayerStack

STREAM = 0x5EED  # keeps these draws apart from the aligned-layers generator seeded by the same (seed, step)


def layerskip_rates(num_layers: int, p_max: float) -> list[float]:
    """p_ℓ = p_max · (2^{ℓ/(L−1)} − 1) for ℓ = 0 … L−1 (LayerSkip's D(ℓ), S(t) = 1); [p_max] for L = 1."""
    if not 0 <= p_max < 1:
        raise LayerwiseError(f"layer dropout {p_max}: use a probability in [0, 1)", option="layer_dropout")
    if num_layers == 1:
        return [p_max]
    return [p_max * (math.exp(ell * math.log(2) / (num_layers - 1)) - 1) for ell in range(num_layers)]


class LayerDropout:
    """Skips the stack's blocks by LayerSkip's schedule while training. ``draw(step)`` before each optimizer step."""

    def __init__(self, stack: LayerStack, p_max: float, seed: int = 0):
        self.rates = torch.tensor(layerskip_rates(stack.num_layers, p_max), dtype=torch.float64)
        self.seed, self.generator = seed, torch.Generator()
        self.skip: list[bool] = [False] * stack.num_layers
        index = {id(block): i for i, block in enumerate(stack.blocks)}
        call = stack._call_block  # the adapter's way of running one block, wrapped in place

        def call_or_skip(block, state):
            i = index.get(id(block))
            if i is not None and self.skip[i] and torch.is_grad_enabled():
                return state.h  # the residual stream passes the skipped block unchanged
            return call(block, state)

        stack._call_block = call_or_skip

    def draw(self, step: int) -> list[bool]:
        """The blocks optimizer step ``step`` skips: u_ℓ < p_ℓ, u drawn from a generator seeded by (seed, step)."""
        self.generator.manual_seed(step_seed(self.seed, step, STREAM))
        u = torch.rand(len(self.rates), generator=self.generator, dtype=torch.float64)
        self.skip = (u < self.rates).tolist()
        return self.skip
