"""Model surgery: the one place that rewrites a model's blocks or weights.

- ``keep_blocks(model, stack, k)`` returns a copy of the model holding blocks 1..k, with its config saying
  so (own models: ``depth = k``; Hugging Face: ``num_hidden_layers = k``), so that the copy's own forward
  is readout(hᵏ) and it saves and loads like any model;
- ``stack_groups`` splits a model's tensors into the stack's groups (embed, blocks, readout), and
  ``write_mix`` / ``write_tensors`` / ``reestimate_batchnorm`` rewrite them in place (``layerwise connect``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.stack.layer_stack import LayerStack


def module_path(model: nn.Module, target: nn.Module) -> str:
    """The dotted name of ``target`` inside ``model``."""
    for name, module in model.named_modules():
        if module is target:
            return name
    raise LayerwiseError(f"cannot locate the blocks inside {type(model).__name__}: truncation is unsupported")


def keep_blocks(model: nn.Module, stack: LayerStack, k: int) -> nn.Module:
    """A deep copy of ``model`` with blocks 1..k only (weights copied, the original untouched)."""
    L = stack.num_layers
    if not 1 <= k <= L:
        raise LayerwiseError(f"k={k} out of range: this model has layers 1..{L}")
    own = dataclasses.is_dataclass(getattr(model, "config", None)) and hasattr(model.config, "depth")
    if not own and not hasattr(getattr(model, "config", None), "num_hidden_layers"):
        raise LayerwiseError(f"cannot truncate {type(model).__name__}: only own and Hugging Face models")
    path = module_path(model, stack.blocks)
    copied = copy.deepcopy(model)
    parent_path, _, attr = path.rpartition(".")
    parent = copied.get_submodule(parent_path) if parent_path else copied
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:k]))
    if own:
        copied.config = dataclasses.replace(copied.config, depth=k)
    else:
        cfg = copied.config
        cfg.num_hidden_layers = k
        if isinstance(getattr(cfg, "layer_types", None), list):  # per-layer attention types (Llama-style)
            cfg.layer_types = cfg.layer_types[:k]
    return copied


# ---------------------------------------------------------------- weights by layer-stack group
#
# Layer-wise interpolation (``layerwise connect``) moves whole groups of the layer stack: ``embed`` (every
# tensor that is in no block and not in the readout), ``block1`` … ``blockL`` and ``readout`` (final norm,
# pooling and head). A tensor is one parameter or buffer object; tied weights (GPT-2's wte = lm_head, the own
# GPT's tok = head) are one tensor with several names and belong to the earliest group that uses it, in stack
# order embed < blocks < readout, so a tied embedding moves with ``embed`` and stays tied.


def named_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of ``model`` once, under its first name (``state_dict`` order)."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def tied_names(model: nn.Module) -> dict[str, list[str]]:
    """First name → the other names of each tensor that is shared under several names (tied weights)."""
    first: dict[int, str] = {}
    tied: dict[str, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) in first:
            tied.setdefault(first[id(t)], []).append(name)
        else:
            first[id(t)] = name
    return tied


def stack_groups(model: nn.Module, stack: LayerStack) -> dict[str, list[str]]:
    """Group name → names (``named_tensors``) of its tensors, in stack order embed, block1..L, readout.

    Every tensor of ``model`` is in exactly one group: a block's and the readout's tensors are found by
    identity, and whatever remains (embeddings, positions, the embedding norm) is the embed.
    """
    owner: dict[int, str] = {}
    members = [(f"block{i + 1}", block) for i, block in enumerate(stack.blocks)] + [("readout", stack.readout)]
    for group, module in members:
        for t in [*module.parameters(), *module.buffers()]:
            owner.setdefault(id(t), group)
    order = ["embed", *(g for g, _ in members)]
    rank = {g: i for i, g in enumerate(order)}
    groups: dict[str, list[str]] = {g: [] for g in order}
    names_of: dict[int, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names_of.setdefault(id(t), []).append(name)
    inside = _module_prefixes(model, stack)
    for name, t in named_tensors(model).items():
        # a tensor also used outside the blocks and readout (a tied embedding) is the embed's
        used_elsewhere = any(not n.startswith(inside) for n in names_of[id(t)])
        group = "embed" if used_elsewhere or id(t) not in owner else owner[id(t)]
        groups[group].append(name)
    return {g: groups[g] for g in sorted(groups, key=rank.get)}


def _module_prefixes(model: nn.Module, stack: LayerStack) -> tuple[str, ...]:
    """``"name."`` of every module of the blocks and the readout inside ``model``: a tensor whose name starts
    with one of them lies in a block or the readout."""
    ids = {id(m) for m in [*stack.blocks, *stack.readout.modules()] if not isinstance(m, nn.Identity)}
    return tuple(name + "." for name, m in model.named_modules() if id(m) in ids and name)


def check_same_layout(a: dict[str, Tensor], b: dict[str, Tensor], groups_a: dict[str, list[str]],
                      groups_b: dict[str, list[str]], what: str = "the models") -> None:
    """Two models' tensors (``named_tensors``) must match group for group, name for name and shape for shape;
    the error names the group that differs."""
    group_of = {n: g for groups in (groups_b, groups_a) for g, names in groups.items() for n in names}
    for g in groups_a:
        if groups_a[g] != groups_b.get(g):
            only = sorted(set(groups_a[g]) ^ set(groups_b.get(g, [])))
            which = f": {only[0]} is only in model {'A' if only[0] in a else 'B'}" if only else ""
            raise LayerwiseError(f"{what} differ in group {g}{which}; pass two models of one architecture")
    for name in sorted(set(a) ^ set(b)):
        raise LayerwiseError(f"{what} differ in group {group_of.get(name, 'embed')}: {name} is only in model "
                             f"{'A' if name in a else 'B'}; pass two models of one architecture")
    for g, names in groups_a.items():
        for n in names:
            if a[n].shape != b[n].shape or a[n].dtype != b[n].dtype:
                raise LayerwiseError(f"{what} differ in group {g}: {n} is {tuple(a[n].shape)} {a[n].dtype} in A "
                                     f"and {tuple(b[n].shape)} {b[n].dtype} in B; pass two models of one shape")


@torch.no_grad()
def write_mix(target: dict[str, Tensor], a: dict[str, Tensor], b: dict[str, Tensor], alpha: dict[str, float]) -> None:
    """Set each ``target`` tensor (in place) to (1 − α)·a + α·b with α = ``alpha[name]`` (0 when absent).

    Floating tensors are interpolated exactly at the ends (α = 0 gives a, α = 1 gives b); integer tensors (a
    BatchNorm's batch counter, position ids) cannot be, and are copied from the nearer end (α < ½: a).
    In-place writes keep tied tensors tied.
    """
    for name, t in target.items():
        w = float(alpha.get(name, 0.0))
        if not t.is_floating_point():
            t.copy_(a[name] if w < 0.5 else b[name])
        elif w == 0.0:
            t.copy_(a[name])
        elif w == 1.0:
            t.copy_(b[name])
        else:
            t.copy_((1.0 - w) * a[name] + w * b[name])


@torch.no_grad()
def write_tensors(model: nn.Module, values: dict[str, Tensor]) -> None:
    """Copy ``values`` (name → tensor, names of ``named_tensors``) into ``model``'s own tensors, in place."""
    own = named_tensors(model)
    for name, v in values.items():
        own[name].copy_(v)


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, forward: Callable[[dict], object], batches: Iterable[dict]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``batches`` as the cumulative
    average over batches (``momentum=None``, as ``torch.optim.swa_utils.update_bn``), with only the
    BatchNorm layers in train mode (dropout stays off); the model's modes and momenta are restored."""
    bns = batchnorms(model)
    if not bns:
        return
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in batches:
            forward(batch)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)
