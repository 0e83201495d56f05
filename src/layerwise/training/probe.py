"""The linear-probe stage of LP and LP-FT: L2 logistic regression on frozen features, copied into the head."""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from layerwise.data.batches import to_device
from layerwise.errors import LayerwiseError
from layerwise.stack import LayerStack


def readout_linear(stack: LayerStack) -> nn.Linear:
    """The last nn.Linear of the readout head: LP fits its input → logits map."""
    head = stack.readout.head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    if not linears:
        raise LayerwiseError("this model's readout has no linear classifier: LP needs a classification head")
    return linears[-1]


@torch.no_grad()
def head_inputs(stack: LayerStack, loader: Iterable[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, D) inputs of the readout's final Linear (forward hook, eval mode) and (N,) labels."""
    linear, feats, labels = readout_linear(stack), [], []
    handle = linear.register_forward_hook(lambda _m, args, _out: feats.append(args[0].detach().float().cpu()))
    was = stack.training
    stack.eval()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            stack(batch)
            labels.append(batch["labels"].cpu())
    finally:
        handle.remove()
        stack.train(was)
    return torch.cat(feats), torch.cat(labels)


def fit_probe(x: Tensor, y: Tensor, cv: int = 3, seed: int = 0):
    """L2 logistic regression on frozen features, C chosen by cross-validation (LogisticRegressionCV)."""
    from sklearn.linear_model import LogisticRegressionCV

    clf = LogisticRegressionCV(Cs=np.logspace(-3, 3, 7), cv=cv, max_iter=3000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.8+ announces default changes that do not affect L2 + accuracy
        warnings.simplefilter("ignore", FutureWarning)
        return clf.fit(x.double().numpy(), y.numpy())


@torch.no_grad()
def probe_to_linear(clf, linear: nn.Linear) -> None:
    """Copy a fitted probe into ``linear``. Binary probes (one logit z) become logits (−z/2, z/2)."""
    coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
    bias = torch.as_tensor(clf.intercept_, dtype=torch.float64)
    classes = [int(c) for c in clf.classes_]
    if coef.shape[0] == 1:
        coef, bias = torch.cat([-coef / 2, coef / 2]), torch.cat([-bias / 2, bias / 2])
    if max(classes) >= linear.out_features or coef.shape[1] != linear.in_features:
        raise LayerwiseError(f"the probe ({coef.shape[0]} classes × {coef.shape[1]}) does not fit the head "
                             f"({linear.out_features} × {linear.in_features}): check that `data` matches the model",
                             option="data")
    weight = torch.zeros(linear.out_features, linear.in_features, dtype=torch.float64)
    b = torch.full((linear.out_features,), -1e4, dtype=torch.float64)  # classes absent from training: never predicted
    weight[classes], b[classes] = coef, bias
    linear.weight.copy_(weight.to(linear.weight))
    if linear.bias is not None:
        linear.bias.copy_(b.to(linear.bias))


def linear_probe(stack: LayerStack, loader: Iterable[dict[str, Tensor]], device: torch.device, cv: int, seed: int,
                 model_name: str) -> dict[str, float]:
    """The LP stage: fit the readout's last Linear on frozen features (C by cross-validation) and copy it in;
    the chosen C and the probe's training accuracy."""
    if stack.task != "classification":
        raise LayerwiseError(f"LP needs a classifier; {model_name} is a {stack.task} model")
    x, y = head_inputs(stack, loader, device)
    clf = fit_probe(x, y, cv, seed)
    probe_to_linear(clf, readout_linear(stack))
    return {"lp_C": float(np.ravel(clf.C_)[0]), "lp_train_accuracy": float(clf.score(x.double().numpy(), y.numpy()))}
