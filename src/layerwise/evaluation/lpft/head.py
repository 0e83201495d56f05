"""The head of an LP-FT classifier and the eNTK at the start of fine-tuning, for a model as it is:
``head_norms`` (‖W‖_F and each class row's ‖W_c‖ of the head's last Linear), ``check_classifier``,
``check_ntk_memory`` (the eNTK's memory estimate, refused above a bound before any work) and ``ntk_at_start``
(K_pt and K_ft on a subset: traces, shares and leave-one-out kernel-regression accuracies, ``ntk``)."""

from __future__ import annotations

import torch
from torch import nn

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset, make_loader
from layerwise.data.batches import to_device
from layerwise.errors import LayerwiseError
from layerwise.evaluation.lpft.ntk import backbone_parameters, ft_kernel, ntk_bytes, ntk_summary, pt_kernel
from layerwise.stack import LayerStack
from layerwise.training.probe import head_inputs, readout_linear

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
