"""Aligned training inside a Hugging Face ``Trainer`` in two lines:

    from layerwise.training.hf_trainer import AlignedTrainer
    trainer = AlignedTrainer(model=model, args=args, train_dataset=ds, objective="aligned")

``compute_loss`` runs the wrapped model once with ``output_hidden_states=True`` (so DDP/FSDP wrappers see
the forward pass) and applies the model's own readout to every layer: layers 1..L−1 through the
layer stack's shared readout, layer L through the model's own logits (for models whose last hidden
state already includes the final norm, e.g. GPT-2, that avoids normalising twice). The loss is then
exactly the registered objective's phase loss (``objectives.OBJECTIVES``) of those per-layer CEs (for language
models computed chunk by chunk by ``training.lm_loss``, see ``AlignedTrainer``); step s uses the phase the
objective's schedule gives it (``aligned`` alternates with the standard loss on odd steps, ``aligned-joint`` not).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn
from transformers import Trainer

from layerwise.errors import LayerwiseError
from layerwise.training.losses import layer_losses
from layerwise.stack import LayerStack, StackState
from layerwise.training import objectives as O
from layerwise.training.lm_loss import chunked_lm_loss


def hf_objectives() -> list[str]:
    """The registered objectives ``AlignedTrainer`` runs: gradient steps through the shared readout only (no
    exit heads, no linear probe)."""
    return [name for name, o in O.OBJECTIVES.items() if o.schedule and not o.exit_heads and not o.linear_probe]


class HFLayerLosses:
    """``objectives.LayerLosses`` from one forward pass of the wrapped model: layers 1..L−1 through the layer
    stack's shared readout, layer L through the model's own logits, or (``last_h`` given: chunked language-model
    loss) every layer through the shared readout, layer L from its pre-norm state."""

    def __init__(self, stack: LayerStack, outputs: Any, last_h: Tensor | None, inputs: dict[str, Tensor],
                 layer_weights: Any, beta: float):
        self.stack, self.outputs, self.beta = stack, outputs, beta
        self.labels, self.mask = inputs["labels"], inputs.get("attention_mask")
        self.hs = list(outputs.hidden_states)[1:]  # layers 1..L
        self.pre_norm = None if last_h is None else self.hs[:-1] + [last_h]
        self.weights = O.layer_weights(len(self.hs), layer_weights)

    def ce(self, weights: Tensor, exit_heads: bool = False) -> Tensor:
        if exit_heads:
            raise LayerwiseError("AlignedTrainer has no per-layer exit heads: for multi-exit use `layerwise train`")
        n, stack = len(weights), self.stack
        if self.pre_norm is not None:
            return chunked_lm_loss([stack.readout] * n, self.pre_norm[-n:], self.mask, self.labels, weights)
        readouts = [stack.readout] * (n - 1) + [lambda _h, _m: self.outputs.logits]
        return O.aligned(layer_losses(readouts, self.hs[-n:], self.mask, self.labels, stack.task), weights)

    def features(self) -> list[Tensor]:
        return [self.stack.features(StackState(h=h, mask=self.mask)) for h in self.hs]


class AlignedTrainer(Trainer):
    """``transformers.Trainer`` with a registered layer-wise objective (``hf_objectives()``: standard, aligned,
    aligned-joint, cos-reg and any registered objective without exit heads or linear probe).

    ``lm_loss="chunked"`` (language models): the per-layer CEs come from ``training.lm_loss.chunked_lm_loss``
    on the pre-norm hidden states (layer L's is taken at the final norm's input by a forward pre-hook), and
    the model computes only its last position's logits (``logits_to_keep=1``) unless the outputs are
    returned; ``"naive"``: ``losses.layer_losses`` on full logits.
    """

    def __init__(self, *args: Any, objective: str = "aligned", layer_weights: Any = "linear", cos_beta: float = 1.0,
                 lm_loss: str = "chunked", **kwargs: Any):
        if objective not in hf_objectives():
            raise LayerwiseError(f"AlignedTrainer supports {', '.join(hf_objectives())}; for multi-exit use "
                                 "`layerwise train`")
        if lm_loss not in O.LM_LOSSES:
            raise LayerwiseError(f"unknown LM loss {lm_loss!r}: use one of {', '.join(O.LM_LOSSES)}")
        super().__init__(*args, **kwargs)
        self.objective = O.get_objective(objective)
        self.layer_weights, self.cos_beta, self.lm_loss = layer_weights, cos_beta, lm_loss
        self._stacks: dict[int, LayerStack] = {}

    def stack_for(self, model: nn.Module) -> LayerStack:
        """The layer stack of the unwrapped model (cached)."""
        inner = self.accelerator.unwrap_model(model)
        if id(inner) not in self._stacks:
            self._stacks[id(inner)] = LayerStack(inner)
        return self._stacks[id(inner)]

    def layerwise_loss(self, model: nn.Module, inputs: dict[str, Tensor], phase: O.Phase | str,
                       keep_logits: bool = True) -> tuple[Tensor, Any]:
        """The loss of ``phase`` on one batch, and the model outputs (with only the last position's
        logits when the loss is chunked and ``keep_logits`` is false)."""
        stack = self.stack_for(model)
        chunked = self.lm_loss == "chunked" and stack.task == "lm"
        outputs, last_h = self._forward(model, inputs, stack, chunked, keep_logits)
        losses = HFLayerLosses(stack, outputs, last_h, inputs, self.layer_weights, self.cos_beta)
        return O.get_phase(phase).loss(losses), outputs

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
        phase = self.objective.phase(self.state.global_step)
        loss, outputs = self.layerwise_loss(model, inputs, phase, keep_logits=return_outputs)
        return (loss, outputs) if return_outputs else loss


__all__ = ["AlignedTrainer", "HFLayerLosses", "hf_objectives"]
