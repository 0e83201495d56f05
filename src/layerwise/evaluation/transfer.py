"""Distribution shift and transfer, layer by layer (paper Fig. 6).

- Shift: per-layer accuracy acc_ℓ = mean[argmax readout_ℓ(hˡ(x)) = y] on a second split or data set
  (optionally with the training augmentations as the shift), next to the in-distribution curve.
- Transfer: freeze the model; fit one shared linear head W (multinomial logistic regression, sklearn) on the
  last layer's readout inputs z_L = norm(pool(hᴸ)) of a new task, then apply it after every layer,
  ŷ_ℓ = argmax W·norm(pool(hˡ)) (the model's own final norm recomputed on each layer), and report acc_ℓ.
  A split transfer trains on some classes and transfers to the others (``cifar10:classes=0-4`` →
  ``cifar10:classes=5-9``, ``data.variants``): a new task the features were never trained on, yet learnable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset, labels_of, load_dataset, make_loader, materialize, model_inputs
from layerwise.errors import LayerwiseError
from layerwise.evaluation.per_layer import gathered_layer_logits

Relabel = Callable[[Tensor], Tensor]


def _batches(bundle: ModelBundle, data, split: str, *, limit: int | None, batch_size: int, seed: int, data_dir,
             augment: bool = False, relabel: Relabel | None = None):
    ds = data if isinstance(data, LayerwiseDataset) else load_dataset(data, split, limit=limit, seed=seed,
                                                                       data_dir=data_dir)
    if ds.labels is None:
        raise LayerwiseError(f"{ds.name} has no labels: pass a labelled classification data set")
    batches = materialize(make_loader(ds, bundle.inputs, batch_size, augment=augment, seed=seed),
                          next(bundle.model.parameters()).device)
    if relabel is not None:
        for b in batches:
            b["labels"] = relabel(b["labels"])
    return batches


def layerwise_accuracy(bundle, data, split: str = "test", *, limit: int | None = None, batch_size: int = 64,
                       seed: int = 0, data_dir: str | Path | None = None, augment: bool = False) -> list[float]:
    """acc_ℓ for ℓ = 1..L with the readout serving each layer (a multi-exit model's own heads)."""
    bundle.model.eval()
    batches = _batches(bundle, data, split, limit=limit, batch_size=batch_size, seed=seed, data_dir=data_dir,
                       augment=augment)
    labels = labels_of(batches)
    logits = gathered_layer_logits(bundle.stack, batches, bundle.exit_heads)  # data-parallel under a launcher
    return (logits.argmax(-1) == labels).double().mean(1).tolist()


@torch.inference_mode()
def readout_inputs(bundle, batches) -> tuple[Tensor, Tensor]:
    """(L+1, N, D) features norm(pool(hˡ)) for ℓ = 0..L — what the head sees — and the (N,) labels; under a
    launcher each process takes its shard of ``batches`` and the features are gathered in data-set order."""
    from layerwise.parallel import gather_rows, shard_list

    features = bundle.stack.readout.without_head()
    per_batch = [torch.stack([features(s.h, s.mask).float().cpu() for s in bundle.stack.states(model_inputs(b))])
                 for b in shard_list(batches)]
    return gather_rows(torch.cat(per_batch, dim=1) if per_batch else None, dim=1), labels_of(batches)


def transfer_accuracy(bundle, train, test, *, train_split: str = "train", test_split: str = "test",
                      relabel: Relabel | None = None, limit: int | None = None, batch_size: int = 64,
                      seed: int = 0, data_dir: str | Path | None = None, C: float = 1.0,
                      max_iter: int = 1000) -> dict[str, Any]:
    """Fit a shared logistic-regression head on the frozen model's last-layer readout inputs of a new task,
    apply it after every layer ℓ = 0..L, return per-layer test accuracy (index ℓ)."""
    from sklearn.linear_model import LogisticRegression

    bundle.model.eval()
    common = dict(limit=limit, batch_size=batch_size, seed=seed, data_dir=data_dir, relabel=relabel)
    z_train, y_train = readout_inputs(bundle, _batches(bundle, train, train_split, **common))
    z_test, y_test = readout_inputs(bundle, _batches(bundle, test, test_split, **common))
    if len(torch.unique(y_train)) < 2:
        raise LayerwiseError("the transfer task's training labels have a single class: use more or other data")
    head = LogisticRegression(C=C, max_iter=max_iter).fit(z_train[-1].numpy(), y_train.numpy())
    acc = [float(np.mean(head.predict(z.numpy()) == y_test.numpy())) for z in z_test]
    return {"per_layer_accuracy": acc, "train_accuracy": float(head.score(z_train[-1].numpy(), y_train.numpy())),
            "layers": list(range(len(acc))), "classes": int(len(torch.unique(y_train)))}


__all__ = ["layerwise_accuracy", "readout_inputs", "transfer_accuracy"]
