"""Aligned training inside a Hugging Face ``Trainer`` in two lines:

    from layerwise.training.hf_trainer import AlignedTrainer
    trainer = AlignedTrainer(model=model, args=args, train_dataset=ds, objective="aligned")

``compute_loss`` runs the wrapped model once with ``output_hidden_states=True`` (so DDP/FSDP wrappers see
the forward pass) and applies the model's own readout to every layer: layers 1..L−1 through the
layer stack's shared readout, layer L through the model's own logits (for models whose last hidden
state already includes the final norm, e.g. GPT-2, that avoids normalising twice). The loss is then
exactly ``objectives.aligned`` / ``standard`` / ``cos_reg`` of those per-layer CEs (for language models computed
chunk by chunk by ``training.lm_loss``, see ``AlignedTrainer``). ``aligned`` alternates
with the standard loss on odd optimizer steps (``objectives.phase``); ``aligned-joint`` does not.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer

from layerwise.errors import LayerwiseError
from layerwise.training.losses import layer_losses
from layerwise.stack import LayerStack, StackState
from layerwise.training import objectives as O
from layerwise.training.lm_loss import chunked_lm_loss

HF_OBJECTIVES = ("standard", "aligned", "aligned-joint", "cos-reg")


class AlignedTrainer(Trainer):
    """``transformers.Trainer`` with a layer-wise objective (standard, aligned, aligned-joint, cos-reg).

    ``lm_loss="chunked"`` (language models): the per-layer CEs come from ``training.lm_loss.chunked_lm_loss``
    on the pre-norm hidden states (layer L's is taken at the final norm's input by a forward pre-hook), and
    the model computes only its last position's logits (``logits_to_keep=1``) unless the outputs are
    returned; ``"naive"``: ``losses.layer_losses`` on full logits.
    """

    def __init__(self, *args: Any, objective: str = "aligned", layer_weights: Any = "linear", cos_beta: float = 1.0,
                 lm_loss: str = "chunked", **kwargs: Any):
        if objective not in HF_OBJECTIVES:
            raise LayerwiseError(f"AlignedTrainer supports {', '.join(HF_OBJECTIVES)}; for multi-exit use "
                                 "`layerwise train`")
        if lm_loss not in O.LM_LOSSES:
            raise LayerwiseError(f"unknown LM loss {lm_loss!r}: use one of {', '.join(O.LM_LOSSES)}")
        super().__init__(*args, **kwargs)
        self.objective, self.layer_weights, self.cos_beta, self.lm_loss = objective, layer_weights, cos_beta, lm_loss
        self._stacks: dict[int, LayerStack] = {}

    def stack_for(self, model: nn.Module) -> LayerStack:
        """The layer stack of the unwrapped model (cached)."""
        inner = self.accelerator.unwrap_model(model)
        if id(inner) not in self._stacks:
            self._stacks[id(inner)] = LayerStack(inner)
        return self._stacks[id(inner)]

    def layerwise_loss(self, model: nn.Module, inputs: dict[str, Tensor], phase: str,
                       keep_logits: bool = True) -> tuple[Tensor, Any]:
        """The objective of ``phase`` on one batch, and the model outputs (with only the last position's
        logits when the loss is chunked and ``keep_logits`` is false)."""
        stack = self.stack_for(model)
        labels, mask = inputs["labels"], inputs.get("attention_mask")
        chunked = self.lm_loss == "chunked" and stack.task == "lm"
        outputs, last_h = self._forward(model, inputs, stack, chunked, keep_logits)
        hs = list(outputs.hidden_states)[1:]  # layers 1..L
        weights, one = O.layer_weights(len(hs), self.layer_weights), torch.ones(1, dtype=torch.float64)
        if chunked:  # every layer through the shared readout, layer L from its pre-norm state
            pre_norm = hs[:-1] + [last_h]

            def weighted(n: int, w: Any) -> Tensor:
                return chunked_lm_loss([stack.readout] * n, pre_norm[-n:], mask, labels, w)
        else:
            last = [lambda _h, _m: outputs.logits]

            def weighted(n: int, w: Any) -> Tensor:
                readouts = [stack.readout] * (n - 1) + last
                return O.aligned(layer_losses(readouts, hs[-n:], mask, labels, stack.task), w)
        if phase == "standard":
            return weighted(1, one), outputs
        if phase == "aligned":
            return weighted(len(hs), weights), outputs
        feats = [stack.features(StackState(h=h, mask=mask)) for h in hs]
        return O.cos_reg(weighted(1, one), feats, weights, self.cos_beta), outputs

    def _forward(self, model: nn.Module, inputs: dict[str, Tensor], stack: LayerStack, capture: bool,
                 keep_logits: bool) -> tuple[Any, Tensor | None]:
        """The wrapped model's forward with all hidden states; with ``capture``, also layer L's pre-norm state
        (the input of the final norm) and, unless ``keep_logits``, the last position's logits only."""
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        norm, seen = stack.readout.norm, []
        if not capture:
            return model(**kwargs, output_hidden_states=True), None
        if not keep_logits and "logits_to_keep" in inspect.signature(stack.model.forward).parameters:
            kwargs["logits_to_keep"] = 1
        if isinstance(norm, nn.Identity):  # no final norm: the last hidden state is layer L's own
            outputs = model(**kwargs, output_hidden_states=True)
            return outputs, outputs.hidden_states[-1]
        handle = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            outputs = model(**kwargs, output_hidden_states=True)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise LayerwiseError(f"the final norm of {type(stack.model).__name__} ran {len(seen)} times in one "
                                 "forward pass: use lm_loss='naive' for this model")
        return outputs, seen[0]

    def compute_loss(self, model: nn.Module, inputs: dict[str, Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        phase = O.phase(self.objective, self.state.global_step)
        loss, outputs = self.layerwise_loss(model, inputs, phase, keep_logits=return_outputs)
        return (loss, outputs) if return_outputs else loss


__all__ = ["AlignedTrainer", "HF_OBJECTIVES"]
