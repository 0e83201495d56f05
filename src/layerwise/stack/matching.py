"""Weight matching (Ainsworth, Hayase & Srinivasa, "Git Re-Basin", ICLR 2023, §3.2): permute model B's hidden
units so that its weights line up with model A's, without changing the function B computes.

A *permutation spec* maps each tensor name to the permutation acting on each of its axes (None where none
does), e.g. for an MLP layer ``fc.weight: ("P2", "P1")``, ``fc.bias: ("P2",)``. An adapter declares it
(``StackParts.permutations``) for the models whose units it knows: the project's MLPs (``mlp_permutations``).

Matching is coordinate descent: for one permutation P at a time, with the others fixed, maximise
Σ_w ⟨W_A, P·W_B⟩ over the tensors P acts on, a linear assignment problem solved exactly by
``scipy.optimize.linear_sum_assignment``; sweep the permutations in random order until none improves.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

PermutationSpec = dict[str, tuple["str | None", ...]]


def mlp_permutations(depth: int, residual: bool, batchnorm: bool, final_norm: bool) -> PermutationSpec:
    """The permutation spec of the project's MLP (``models.own.MLP``).

    Without skips each hidden layer hˡ (ℓ = 0..L; h⁰ = inp(x) is linear) has its own permutation Pℓ; with
    skips every block adds into one residual stream, so one permutation P acts on all of them and on the
    final LayerNorm (permutation-equivariant: it normalises over all units with per-unit affine weights).
    """
    unit = (lambda ell: "P") if residual else (lambda ell: f"P{ell}")
    spec: PermutationSpec = {"inp.weight": (unit(0), None), "inp.bias": (unit(0),)}
    for i in range(depth):
        out, inp = unit(i + 1), unit(i)
        spec[f"blocks.{i}.fc.weight"] = (out, inp)
        spec[f"blocks.{i}.fc.bias"] = (out,)
        if batchnorm:
            for name in ("weight", "bias", "running_mean", "running_var"):
                spec[f"blocks.{i}.bn.{name}"] = (out,)
            spec[f"blocks.{i}.bn.num_batches_tracked"] = ()
    if final_norm:
        spec["norm.weight"] = spec["norm.bias"] = (unit(depth),)
    spec["head.weight"], spec["head.bias"] = (None, unit(depth)), (None,)
    return spec


def permute(tensors: dict[str, Tensor], spec: PermutationSpec, perms: dict[str, Tensor],
            skip: tuple[str, int] | None = None) -> dict[str, Tensor]:
    """New tensors with ``perms[P]`` applied on every axis P acts on: w[..., perm, ...]; ``skip`` = (name, axis)
    leaves that one axis unpermuted (coordinate descent). Tensors the spec does not name are returned as they are."""
    out = dict(tensors)
    for name, axes in spec.items():
        if name not in tensors:
            continue
        t = tensors[name]
        for axis, p in enumerate(axes):
            if p is not None and (name, axis) != skip:
                t = t.index_select(axis, perms[p].to(t.device))
        out[name] = t
    return out


def _axes_of(spec: PermutationSpec) -> dict[str, list[tuple[str, int]]]:
    axes: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, per_axis in spec.items():
        for axis, p in enumerate(per_axis):
            if p is not None:
                axes[p].append((name, axis))
    return dict(axes)


def weight_matching(spec: PermutationSpec, a: dict[str, Tensor], b: dict[str, Tensor], *, max_sweeps: int = 100,
                    seed: int = 0) -> dict[str, Tensor]:
    """Permutations P (index tensors: A's unit i is matched to B's unit P[i]) maximising Σ ⟨W_A, P·W_B⟩ over
    the tensors of ``a`` / ``b`` the spec names (pass the parameters; running statistics follow along)."""
    from scipy.optimize import linear_sum_assignment

    axes = {p: [(n, ax) for n, ax in pairs if n in a] for p, pairs in _axes_of(spec).items()}
    a64 = {n: a[n].detach().double().cpu() for n in spec if n in a}
    b64 = {n: b[n].detach().double().cpu() for n in spec if n in b}
    sizes = {p: a64[pairs[0][0]].shape[pairs[0][1]] for p, pairs in axes.items() if pairs}
    perms = {p: torch.arange(n) for p, n in sizes.items()}
    rng = np.random.default_rng(seed)
    names = sorted(sizes)
    for _ in range(max_sweeps):
        improved = False
        for p in (names[i] for i in rng.permutation(len(names))):
            n = sizes[p]
            score = torch.zeros(n, n, dtype=torch.float64)
            for name, axis in axes[p]:
                wb = permute({name: b64[name]}, spec, perms, skip=(name, axis))[name]
                score += a64[name].movedim(axis, 0).reshape(n, -1) @ wb.movedim(axis, 0).reshape(n, -1).T
            rows, cols = linear_sum_assignment(score.numpy(), maximize=True)
            new = torch.as_tensor(cols, dtype=torch.long)
            gain = score[rows, cols].sum() - score[torch.arange(n), perms[p]].sum()
            if gain > 1e-12 * max(1.0, float(score.abs().max())):
                improved = True
                perms[p] = new
        if not improved:
            break
    return perms
