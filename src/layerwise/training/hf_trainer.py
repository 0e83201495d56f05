"""Aligned training inside a Hugging Face ``Trainer`` in two lines:

    from layerwise.training.hf_trainer import AlignedTrainer
    trainer = AlignedTrainer(model=model, args=args, train_dataset=ds, objective="aligned")

``compute_loss`` runs the wrapped model once with ``output_hidden_states=True`` (so DDP/FSDP wrappers see
the forward pass) and applies the model's own readout to every layer: layers 1..L−1 through the
layer stack's shared readout, layer L through the model's own logits (for models whose last hidden
state already includes the final norm, e.g. GPT-2, that avoids normalising twice). The loss is then
exactly ``objectives.aligned`` / ``standard`` / ``cos_reg`` of those per-layer CEs. ``aligned`` alternates
with the standard loss on odd optimizer steps (``objectives.phase``); ``aligned-joint`` does not.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import Trainer

from layerwise.errors import LayerwiseError
from layerwise.evaluation.per_layer import layer_losses
from layerwise.stack import LayerStack, StackState
from layerwise.training import objectives as O

HF_OBJECTIVES = ("standard", "aligned", "aligned-joint", "cos-reg")


class AlignedTrainer(Trainer):
    """``transformers.Trainer`` with a layer-wise objective (standard, aligned, aligned-joint, cos-reg)."""

    def __init__(self, *args: Any, objective: str = "aligned", layer_weights: Any = "linear", cos_beta: float = 1.0,
                 **kwargs: Any):
        if objective not in HF_OBJECTIVES:
            raise LayerwiseError(f"AlignedTrainer supports {', '.join(HF_OBJECTIVES)}; for multi-exit use "
                                 "`layerwise train`")
        super().__init__(*args, **kwargs)
        self.objective, self.layer_weights, self.cos_beta = objective, layer_weights, cos_beta
        self._stacks: dict[int, LayerStack] = {}

    def stack_for(self, model: nn.Module) -> LayerStack:
        """The layer stack of the unwrapped model (cached)."""
        inner = self.accelerator.unwrap_model(model)
        if id(inner) not in self._stacks:
            self._stacks[id(inner)] = LayerStack(inner)
        return self._stacks[id(inner)]

    def layerwise_loss(self, model: nn.Module, inputs: dict[str, Tensor], phase: str) -> tuple[Tensor, Any]:
        """The objective of ``phase`` on one batch, and the model outputs."""
        stack = self.stack_for(model)
        labels, mask = inputs["labels"], inputs.get("attention_mask")
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True)
        hs = list(outputs.hidden_states)[1:]  # layers 1..L
        weights = O.layer_weights(len(hs), self.layer_weights)
        last = [lambda _h, _m: outputs.logits]
        if phase == "standard":
            return O.standard(layer_losses(last, hs[-1:], mask, labels, stack.task)), outputs
        if phase == "aligned":
            readouts = [stack.readout] * (len(hs) - 1) + last
            return O.aligned(layer_losses(readouts, hs, mask, labels, stack.task), weights), outputs
        ce_last = layer_losses(last, hs[-1:], mask, labels, stack.task)[0]
        feats = [stack.features(StackState(h=h, mask=mask)) for h in hs]
        return O.cos_reg(ce_last, feats, weights, self.cos_beta), outputs

    def compute_loss(self, model: nn.Module, inputs: dict[str, Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        loss, outputs = self.layerwise_loss(model, inputs, O.phase(self.objective, self.state.global_step))
        return (loss, outputs) if return_outputs else loss


__all__ = ["AlignedTrainer", "HF_OBJECTIVES"]
