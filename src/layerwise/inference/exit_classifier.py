"""A trained exit classifier for per-token early exit: one linear map of the hidden state per layer,

    P(argmax readout(hˡ) = argmax readout(hᴸ) | hˡ) ≈ σ(wₗ·hˡ + bₗ),

fitted by logistic regression on the model's own outputs over a corpus (the label of a position at layer ℓ is
whether the readout at ℓ already picks the last layer's token). Deciding costs D multiply-adds instead of a
readout's V·D, so ``ClassifierPolicy`` runs the LM head once per token, at the exit layer.

Fitting standardises each layer's features, (hˡ − μₗ)/σₗ, for conditioning, then folds μ and σ back into
wₗ and bₗ, so the stored map is linear in the raw hˡ. Saved beside the model as ``exit_classifier.safetensors``
(``weight`` (L, D), ``bias`` (L,)) and ``exit_classifier.json`` (shape, corpus, per-layer agreement and
training accuracy).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.errors import LayerwiseError
from layerwise.files import read_json
from layerwise.report.serialize import load_beside_model, save_beside_model

WEIGHTS, META = "exit_classifier.safetensors", "exit_classifier.json"


@dataclass
class ExitClassifier:
    """weight (L, D), bias (L,): layer ℓ's exit probability σ(weight[ℓ−1]·hˡ + bias[ℓ−1])."""

    weight: Tensor
    bias: Tensor
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.weight.shape[0]

    def probability(self, h: Tensor, layer: int) -> Tensor:
        """σ(wₗ·h + bₗ) per row of h (B, D), layer 1-based."""
        w = self.weight[layer - 1].to(h.device, h.dtype)
        return torch.sigmoid(h @ w + self.bias[layer - 1].to(h.device, h.dtype)).float()

    def check(self, stack) -> None:
        """Refuse a decoder of another shape than the one this classifier was trained on."""
        if (self.num_layers, self.weight.shape[1]) != (stack.num_layers, stack.hidden_size):
            raise LayerwiseError(f"the exit classifier was trained for {self.num_layers} layers × "
                                 f"{self.weight.shape[1]} wide, but this model has {stack.num_layers} × "
                                 f"{stack.hidden_size}: train one on this model")

    def save(self, folder: str | Path, overwrite: bool = False) -> list[Path]:
        """Write the weights and the JSON beside a model (atomically); refuses to replace them unless ``overwrite``."""
        meta = {"layers": self.num_layers, "hidden_size": self.weight.shape[1],
                "formula": "sigmoid(weight[l-1] . h^l + bias[l-1])", **self.meta}
        return save_beside_model(Path(folder), (WEIGHTS, {"weight": self.weight.float(), "bias": self.bias.float()}),
                                 (META, meta), "an exit classifier", overwrite)


def load_exit_classifier(folder: str | Path) -> ExitClassifier:
    """The classifier saved beside a model (``ExitClassifier.save``)."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise LayerwiseError(f"{folder} holds no {WEIGHTS}: train one with train_exit_classifier first")
    tensors = load_beside_model(folder / WEIGHTS, ("weight", "bias"))
    meta = read_json(folder / META) if (folder / META).is_file() else {}
    if not isinstance(meta, dict):
        raise LayerwiseError(f"{folder / META} holds a JSON {type(meta).__name__}, not an object: write it again")
    return ExitClassifier(tensors["weight"], tensors["bias"], meta)


@torch.no_grad()
def exit_features(stack, batches: Iterable[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    """(features (L, N, D), labels (L, N)) over every real position of the batches (``input_ids``,
    ``attention_mask``): hˡ and [argmax readout(hˡ) = argmax readout(hᴸ)]."""
    feats, labels = [], []
    for batch in batches:
        mask = batch.get("attention_mask")
        hs = [s.h for s in stack.states({k: v for k, v in batch.items() if k != "labels"})][1:]
        keep = (mask.bool() if mask is not None else torch.ones(hs[0].shape[:2], dtype=torch.bool))
        rows = [h[keep] for h in hs]
        tokens = [stack.readout(r).argmax(-1) for r in rows]
        feats.append(torch.stack(rows).float())
        labels.append(torch.stack([(t == tokens[-1]).float() for t in tokens]))
    return torch.cat(feats, 1), torch.cat(labels, 1)


def fit_logistic(x: Tensor, y: Tensor, steps: int = 300, weight_decay: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Per-layer logistic regression (w, b) on x (L, N, D), y (L, N), minimising mean BCE + weight_decay·|w|²
    by L-BFGS on standardised features; returned folded back to raw x: w/σ, b − Σ w μ/σ."""
    mu, sd = x.mean(1, keepdim=True), x.std(1, keepdim=True).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[0], x.shape[2], requires_grad=True)
    b = torch.zeros(x.shape[0], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.einsum("lnd,ld->ln", z, w) + b[:, None]
        loss = F.binary_cross_entropy_with_logits(logits, y) + weight_decay * (w ** 2).sum(1).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach() / sd[:, 0], b.detach()
    return w, b - (w * mu[:, 0]).sum(-1)


def train_exit_classifier(stack, batches: Iterable[dict[str, Tensor]], corpus: str = "", steps: int = 300
                          ) -> ExitClassifier:
    """Fit the exit classifier of ``stack`` on its own outputs over ``batches`` (token ids of a corpus)."""
    was_training = stack.model.training
    stack.model.eval()
    try:
        x, y = exit_features(stack, batches)
    finally:
        stack.model.train(was_training)
    if x.shape[1] == 0:
        raise LayerwiseError("no tokens to train the exit classifier on: pass a non-empty corpus")
    w, b = fit_logistic(x, y, steps)
    accuracy = ((torch.einsum("lnd,ld->ln", x, w) + b[:, None] > 0).float() == y).float().mean(1)
    meta = {"corpus": corpus, "tokens": x.shape[1], "agreement_with_last_layer": y.mean(1).tolist(),
            "training_accuracy": accuracy.tolist()}
    return ExitClassifier(w, b, meta)


__all__ = ["ExitClassifier", "exit_features", "fit_logistic", "load_exit_classifier", "train_exit_classifier"]
