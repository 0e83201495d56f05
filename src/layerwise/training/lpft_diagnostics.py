"""The diagnostics ``lpft`` reports for one recipe: head norm, accuracy (in distribution and under shift),
calibration before and after temperature scaling (final readout and every layer's), feature change per layer
against the pretrained model, and the eNTK's two parts at the start of fine-tuning.

The mathematics lives in ``evaluation.ntk``, ``evaluation.calibration`` and ``evaluation.feature_change``; this
module only feeds them a model and batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset, make_loader, materialize
from layerwise.data.batches import Batch, labels_of, to_device
from layerwise.errors import LayerwiseError
from layerwise.evaluation.calibration import calibrate, calibration, layer_calibration
from layerwise.evaluation.feature_change import feature_change
from layerwise.evaluation.ntk import backbone_parameters, ft_kernel, ntk_bytes, ntk_summary, pt_kernel
from layerwise.evaluation.per_layer import layer_logits
from layerwise.report.serialize import atomic_write_text
from layerwise.stack import LayerStack
from layerwise.training.probe import head_inputs, readout_linear
from layerwise.training.log import append_log, read_log

GIB = 2**30


def head_norms(linear: nn.Linear) -> dict[str, float | list[float]]:
    """‖W‖_F and each class row's norm ‖W_c‖ of the head's last Linear (bias excluded)."""
    w = linear.weight.detach().double()
    return {"frobenius": float(w.norm()), "rows": w.norm(dim=1).tolist()}


def check_classifier(stack: LayerStack, model: str) -> nn.Linear:
    """The head's last Linear of a classifier with at least two classes; a LayerwiseError otherwise."""
    if stack.task == "regression":
        raise LayerwiseError(f"{model} has a regression head (one output): head norms per class, calibration and "
                             "kernel accuracy need a classifier with at least two classes")
    if stack.task != "classification":
        raise LayerwiseError(f"{model} is a {stack.task} model with no classifier head: LP-FT needs a "
                             "classification model (e.g. minilm, bert-tiny)")
    linear = readout_linear(stack)
    if linear.out_features < 2:
        raise LayerwiseError(f"{model} has a regression head ({linear.out_features} output): head norms per class, "
                             "calibration and kernel accuracy need a classifier with at least two classes")
    return linear


def check_ntk_memory(stack: LayerStack, n: int, chunk: int, bound_gib: float) -> dict[str, float]:
    """The eNTK's memory estimate (``ntk_bytes``), refused before any work when it exceeds ``bound_gib``."""
    linear = check_classifier(stack, "the model")
    params = backbone_parameters(stack, linear)
    p = sum(t.numel() for t in params.values())
    itemsize = next(iter(params.values())).element_size()
    need = ntk_bytes(n, chunk, linear.out_features, p, itemsize)
    if need > bound_gib * GIB:
        per_sample = 2 * linear.out_features * p * itemsize
        raise LayerwiseError(
            f"the eNTK of {n} examples in chunks of {chunk} needs about {need / GIB:.2f} GiB ({p:,} backbone "
            f"parameters, {per_sample / GIB:.2f} GiB per sample of a chunk), above the bound of {bound_gib:g} GiB: "
            "lower the NTK chunk size (memory) or subset (kernel size), or raise the memory bound")
    return {"backbone_parameters": p, "estimated_bytes": need, "bound_bytes": bound_gib * GIB}


def ntk_at_start(bundle: ModelBundle, subset: LayerwiseDataset, chunk: int, device: torch.device,
                 progress: bool = False) -> dict:
    """K_pt and K_ft on ``subset`` for the model as it is (the start of fine-tuning): traces, shares and
    leave-one-out kernel-regression accuracies."""
    stack = bundle.stack.to(device).eval()
    linear = check_classifier(stack, bundle.name)
    phi, labels = head_inputs(stack, make_loader(subset, bundle.inputs, 64), device)
    samples = [to_device(b, device) for b in make_loader(subset, bundle.inputs, 1)]
    k_pt = pt_kernel(phi, linear.out_features)
    k_ft = ft_kernel(stack, linear, samples, chunk=chunk, progress=progress)
    return {**ntk_summary(k_pt, k_ft, labels), "chunk": chunk}


def _logits(stack: LayerStack, batches: Sequence[Batch]) -> tuple[Tensor, Tensor]:
    """(L, N, C) readout logits after every layer 1..L, and the (N,) labels."""
    return layer_logits(stack, batches), labels_of(batches)


def evaluate_recipe(bundle: ModelBundle, pre: LayerStack, data: dict[str, LayerwiseDataset | None], *,
                    batch_size: int, device: torch.device, progress: bool = False) -> dict:
    """Accuracy, calibration (before/after a temperature fitted on ``data['val']``), per-layer calibration,
    shift accuracy and feature change per layer for a trained model; ``pre`` is the frozen pretrained stack."""
    stack = bundle.stack.to(device).eval()
    linear = check_classifier(stack, bundle.name)

    def batches(ds: LayerwiseDataset) -> list[Batch]:
        return materialize(make_loader(ds, bundle.inputs, batch_size), device)

    test = batches(data["test"])
    val_logits, val_labels = _logits(stack, batches(data["val"]))
    test_logits, test_labels = _logits(stack, test)
    cal = calibrate(val_logits[-1], val_labels, test_logits[-1], test_labels)
    out = {"head_norm_final": head_norms(linear), "accuracy": cal["before"]["accuracy"],
           "ece": cal["before"]["ece"], "ece_temperature_scaled": cal["after"]["ece"], "calibration": cal,
           "layer_calibration": layer_calibration(val_logits, val_labels, test_logits, test_labels)}
    if data.get("shift") is not None:
        shift_logits, shift_labels = _logits(stack, batches(data["shift"]))
        before = calibration(shift_logits[-1], shift_labels)
        after = calibration(shift_logits[-1], shift_labels, cal["temperature"])
        out["shift"] = {"accuracy": before["accuracy"], "ece": before["ece"], "ece_temperature_scaled": after["ece"],
                        "n": int(shift_labels.numel())}
    out["feature_change"] = feature_change(pre.to(device), stack, test, device=device, progress=progress)
    return out


class HeadNormLog:
    """A ``Trainer.step_hooks`` entry: appends {"step", "frobenius", "rows"} of the head to a JSONL file. On resume,
    records from the checkpoint's step on are dropped first (they are redone)."""

    def __init__(self, path: Path, start_step: int):
        self.path = Path(path)
        keep = [r for r in read_log(self.path) if r.get("step", 0) < start_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), self.path)

    def __call__(self, trainer) -> None:
        if trainer.accelerator.is_main_process:
            append_log(self.path, {"step": trainer.pos.step, **head_norms(readout_linear(trainer.stack))})

