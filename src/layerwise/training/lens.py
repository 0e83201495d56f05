"""Training a tuned lens with the project's trainer: the objective ``tuned-lens`` over a module whose only
parameters are the lens's translators (the model is frozen and not part of the module, so checkpoints, the
optimizer and Accelerate see the translators alone).

    loss = (1/L) Σ_{ℓ=0..L−1} KL(p_L ‖ q_ℓ),   p_L = softmax(R(hᴸ)),  q_ℓ = softmax(R(hˡ + Aₗhˡ + bₗ))

averaged over the predicted positions (language models: every real token; classifiers: every sample, on the
readout's pooled token). The target p_L is the model's own output, computed without gradients
(Belrose et al., 2023, eq. 3; ``tuned_lens.TunedLens`` trains the same divergence).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.run_folder import RunFolder
from layerwise.stack import LayerStack, TunedLens
from layerwise.training import objectives as O
from layerwise.training.trainer import OUTPUTS as TRAIN_OUTPUTS, Trainer
from layerwise.training.config import TrainConfig
from layerwise.training.resume import CHECKPOINTS
from layerwise.training.log import LOG, METRICS

LENS_FILES = ("lens.safetensors", "lens.json")
OUTPUTS = (LOG, METRICS, CHECKPOINTS, *LENS_FILES, "results.json", "lens.png", "sequences.safetensors")


def kl_to_last(logits: Tensor, target_logp: Tensor) -> Tensor:
    """Mean over rows of KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), p = exp(target_logp), q = softmax(logits)."""
    return F.kl_div(F.log_softmax(logits.float(), -1), target_logp, log_target=True, reduction="batchmean")


def rows(logits: Tensor, mask: Tensor | None, task: str) -> Tensor:
    """The predicted positions of a readout's output: real tokens of a language model (B·T → N), else the rows."""
    if task == "lm" and mask is not None:
        return logits[mask.bool()]
    return logits.reshape(-1, logits.shape[-1])


class LensLosses:
    """The per-layer KL of one batch (``LayerLosses`` for the ``tuned-lens`` phase): the model runs once, frozen."""

    def __init__(self, module: LensModule, batch: dict[str, Tensor]):
        self.module, self.batch = module, batch

    def lens_kl(self) -> Tensor:
        return self.layer_kl().mean()

    def layer_kl(self) -> Tensor:
        """(L,) KL(p_L ‖ q_ℓ) for ℓ = 0..L−1."""
        stack, lens = self.module.stack, self.module.lens
        with torch.no_grad():
            states = list(stack.states(self.batch))
            mask = states[-1].mask
            target = F.log_softmax(rows(stack.readout(states[-1].h, mask), mask, stack.task).float(), -1)
        return torch.stack([kl_to_last(rows(lens.logits(stack, i, s.h.detach(), s.mask), mask, stack.task), target)
                            for i, s in enumerate(states[:-1])])


def _lens_loss(t: Any) -> Tensor:
    if not hasattr(t, "lens_kl"):
        raise LayerwiseError("objective tuned-lens trains a tuned lens over a frozen model: run `layerwise lens`",
                             option="objective")
    return t.lens_kl()


TUNED_LENS = O.Phase("tuned-lens", _lens_loss)
if "tuned-lens" not in O.OBJECTIVES:
    O.register_objective(O.Objective("tuned-lens", (TUNED_LENS,)))


class LensModule(nn.Module):
    """The lens (trained) beside a frozen stack that is deliberately not a submodule: its weights are in no
    checkpoint, no optimizer group and no DDP bucket."""

    def __init__(self, stack: LayerStack, lens: TunedLens):
        super().__init__()
        self.lens = lens
        object.__setattr__(self, "stack", stack)  # not registered (see the class docstring)

    def draw_for_step(self, step: int) -> None:
        """Nothing is drawn per step (the trainer's hook for ``ObjectiveModule``'s layer draws)."""

    def forward(self, batch: dict[str, Tensor], phase: O.Phase | str) -> Tensor:
        return O.get_phase(phase).loss(LensLosses(self, batch))


def check_lens_model(stack: LayerStack, model: str) -> None:
    """A tuned lens needs a distribution at the last layer: a language model or a classifier."""
    if stack.task not in ("lm", "classification"):
        raise LayerwiseError(f"{model} is a {stack.task} model: a tuned lens is trained to the last layer's "
                             "next-token or class distribution, so it needs a language model or a classifier",
                             option="model")


class LensTrainer(Trainer):
    """The project's ``Trainer`` (Accelerate, resume, checkpoints, log) training a ``TunedLens`` for a frozen model;
    the run folder is ``lens``'s, and the finished run writes ``lens.safetensors`` + ``lens.json`` there."""

    def open_folder(self, cfg: TrainConfig) -> RunFolder:
        if cfg.resume and not (self.out / CHECKPOINTS / "latest.json").exists():
            raise LayerwiseError(f"`resume`: no checkpoint in {self.out / CHECKPOINTS}", option="resume")
        from layerwise import parallel

        if parallel.launched():
            parallel.state(cfg.cpu)  # first: the process group the Accelerator will reuse, as ``open_train_folder``
        return parallel.open_folder(self.out, "lens", overwrite=cfg.overwrite, outputs=OUTPUTS)

    def make_module(self, weights: Tensor) -> nn.Module:
        stack = self.stack
        check_lens_model(stack, self.cfg.model)
        stack.model.requires_grad_(False)
        stack.model.to(self.accelerator.device).eval()  # frozen: no dropout, no gradients
        self.lens = TunedLens.for_stack(stack, {"model": self.cfg.model, "data": self.cfg.data, "task": stack.task})
        return LensModule(stack, self.lens)

    def evaluate(self) -> dict[str, list[float]]:
        """Per-layer KL to the last layer through the lens (``kl``), and the loss, accuracy and perplexity through
        it (``training.scores.evaluate_layers``)."""
        from layerwise.data import to_device
        from layerwise.training.scores import evaluate_layers, task_metric_name

        acc, dev = self.accelerator, self.accelerator.device
        scores = evaluate_layers(self.stack, self.eval_loader, device=dev, autocast=self.autocast, lens=self.lens,
                                 rank=self.rank, world=self.world,
                                 reduce=(lambda t: acc.reduce(t, "sum")) if self.world > 1 else None)
        was = self.module.training
        self.module.eval()
        kl, n = torch.zeros(self.stack.num_layers, dtype=torch.float64, device=dev), 0
        with torch.no_grad():
            for i, batch in enumerate(self.eval_loader):
                if i % self.world == self.rank:
                    kl += LensLosses(self.module, to_device(batch, dev)).layer_kl().double()
                    n += 1
        self.module.train(was)
        kl = kl / max(n, 1)  # mean over this process's batches (each a mean over its positions)
        return {**scores, "kl": [*kl.tolist(), 0.0], "metric": task_metric_name(self.stack.task, None)}

    def save_outputs(self) -> None:
        self.lens.meta.update(steps=self.pos.step, epochs=self.pos.epoch)
        self.lens.save(self.out, overwrite=True)  # a resumed or re-run lens replaces its own files


def train_lens(cfg: TrainConfig) -> tuple[TunedLens, dict[str, Any], Trainer]:
    """Train a tuned lens as ``cfg`` says (``objective`` tuned-lens); returns the lens, the last record and the
    trainer (its stack and loaders serve the evaluation that follows)."""
    trainer = LensTrainer(cfg)
    record = trainer.fit()
    return trainer.lens, record, trainer


__all__ = ["LensModule", "LensLosses", "LensTrainer", "TUNED_LENS", "check_lens_model", "kl_to_last", "train_lens",
           "OUTPUTS", "LENS_FILES"]
