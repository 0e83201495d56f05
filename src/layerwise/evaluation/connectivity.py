"""Layer-wise linear mode connectivity: paths through the layer stack's groups and their scoring (Adilova et al., "Layer-wise linear mode
connectivity", ICLR 2024; Frankle et al., "Linear mode connectivity and the lottery ticket hypothesis", 2020).

Models A and B, their tensors split into the layer stack's groups (embed, block1..L, readout). A *path*
moves some groups: θ(α) takes (1 − α)·θ_A[g] + α·θ_B[g] for the moving groups g, and the rest from A (or
from B). Along it,

    excess(α) = ℒ(θ(α)) − ((1 − α)·ℒ₀ + α·ℒ₁), its maximum B_max and its value at α = ½, B_mid

(``evaluation.barriers``, with the two baselines that give the straight line's ends ℒ₀, ℒ₁).

``connect`` scores the paths: one working copy of A is rewritten in place (``stack.surgery``) for every point of
every path and scored by ``per_layer.output_sums`` on the same materialised batches, so every α of every path is
measured on identical data. Models with BatchNorm have their running statistics re-estimated on training
batches at every point that is neither A nor B itself.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from layerwise.checkpoints import ModelBundle
from layerwise.data.batches import Batch
from layerwise.errors import LayerwiseError
from layerwise.evaluation.barriers import MIDPOINT, check_baseline, curve_summary
from layerwise.evaluation.per_layer import output_sums
from layerwise.parallel import speaks
from layerwise.stack import LayerStack
from layerwise.stack.matching import permute, weight_matching
from layerwise.stack.surgery import (
    batchnorms,
    check_same_layout,
    named_tensors,
    reestimate_batchnorm,
    stack_groups,
    tied_names,
    write_mix,
)

MODES = ("full", "single", "cumulative", "random")


def default_alphas(n: int = 11) -> list[float]:
    """n evenly spaced points of [0, 1], both ends included."""
    return np.linspace(0.0, 1.0, n).tolist()


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """A strictly increasing grid inside [0, 1] of at least two points."""
    values = [float(a) for a in alphas]
    if len(values) < 2 or not all(np.isfinite(values)) or min(values) < 0.0 or max(values) > 1.0:
        raise LayerwiseError(f"α grid {values}: pass at least two values in [0, 1]")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise LayerwiseError(f"α grid {values}: pass increasing values without repeats")
    return values


def check_modes(modes: Sequence[str]) -> list[str]:
    """Known modes, each once, in the order given."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise LayerwiseError(f"unknown mode {', '.join(unknown) or '(none)'}: use one or more of {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


@dataclass(frozen=True)
class Path:
    """A path that moves ``moving`` groups from A toward B; the other groups stay at A (``rest="a"``) or at B."""

    name: str
    moving: tuple[str, ...]
    rest: str = "a"

    def group_alphas(self, groups: Sequence[str], alpha: float) -> dict[str, float]:
        """Each group's interpolation weight at α: α if it moves, else 0 (rest from A) or 1 (rest from B)."""
        still = 0.0 if self.rest == "a" else 1.0
        return {g: alpha if g in self.moving else still for g in groups}


def mode_paths(mode: str, groups: Sequence[str]) -> dict[str, list[Path]]:
    """Variant name → its paths: ``full`` one path of all groups; ``single`` one group at a time, the rest from A
    (``single``) and from B (``rest_from_b``); ``cumulative`` groups added shallow→deep (``cumulative``,
    path k moves groups 0..k) and deep→shallow (``deep_to_shallow``); ``random`` one group at a time (toward
    random targets, see ``random_target``)."""
    g = list(groups)
    if mode == "full":
        return {"full": [Path("all", tuple(g))]}
    if mode == "single":
        return {"single": [Path(x, (x,)) for x in g], "rest_from_b": [Path(x, (x,), "b") for x in g]}
    if mode == "cumulative":
        return {"cumulative": [Path(f"{g[0]}..{x}" if k else x, tuple(g[: k + 1])) for k, x in enumerate(g)],
                "deep_to_shallow": [Path(f"{x}..{g[-1]}" if k < len(g) - 1 else x, tuple(g[k:]))
                                    for k, x in enumerate(g)]}
    if mode == "random":
        return {"random": [Path(x, (x,)) for x in g]}
    check_modes([mode])
    raise AssertionError(mode)


def filter_normalise(d: Tensor, like: Tensor) -> Tensor:
    """Li et al. (NeurIPS 2018) filter normalisation: each filter (row along axis 0) of a weight with ≥ 2 axes
    rescaled to the norm of the same filter of ``like``; a vector (bias, norm weight) as one filter."""
    rows_d, rows_w = d.reshape(d.shape[0], -1) if d.ndim >= 2 else d.reshape(1, -1), \
        like.reshape(like.shape[0], -1) if like.ndim >= 2 else like.reshape(1, -1)
    scale = rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (rows_d * scale).reshape(d.shape)


def random_target(a: dict[str, Tensor], b: dict[str, Tensor], names: Sequence[str], generator: torch.Generator,
                  filter_normalised: bool = False) -> dict[str, Tensor]:
    """θ_A[g] + ‖θ_A[g] − θ_B[g]‖ · d / ‖d‖ for a Gaussian direction d over the floating tensors ``names`` of
    group g (norms over the whole group; d filter-normalised first if asked): a random step as long as the
    step from A to B. Tensors that cannot move (integer buffers) are A's."""
    moving = [n for n in names if a[n].is_floating_point()]
    d = {n: torch.randn(a[n].shape, generator=generator, dtype=torch.float64) for n in moving}
    if filter_normalised:
        d = {n: filter_normalise(d[n], a[n].detach().double().cpu()) for n in moving}
    dist = torch.sqrt(sum(((a[n].double() - b[n].double()) ** 2).sum().cpu() for n in moving) or torch.zeros(()))
    norm = torch.sqrt(sum((v ** 2).sum() for v in d.values()) or torch.zeros(()))
    scale = dist / norm.clamp_min(1e-30)
    out = {n: a[n] for n in names}
    for n in moving:
        out[n] = (a[n].double() + scale * d[n].to(a[n].device)).to(a[n].dtype)
    return out


State = dict[str, Tensor]


def check_pair(a: ModelBundle, b: ModelBundle, match: bool = False) -> dict[str, list[str]]:
    """The stack groups of two models that can be interpolated (same architecture, depth, names and shapes),
    checked before any work; the error names the group that differs."""
    if type(a.model) is not type(b.model):
        raise LayerwiseError(f"the models are different architectures ({type(a.model).__name__} and "
                             f"{type(b.model).__name__}): pass two models of one architecture")
    if a.stack.task != b.stack.task:
        raise LayerwiseError(f"the models do different tasks ({a.stack.task} and {b.stack.task}): pass two models "
                             "with the same kind of head")
    if a.stack.task == "encoder":
        raise LayerwiseError(f"{a.name} has no head, so it has no loss: pass classifiers or language models "
                             "(a bare encoder gains a head when loaded for a labelled data set)")
    ga, gb = stack_groups(a.model, a.stack), stack_groups(b.model, b.stack)
    if list(ga) != list(gb):
        raise LayerwiseError(f"the models differ in depth: A has {a.stack.num_layers} blocks and B "
                             f"{b.stack.num_layers}; pass two models of one shape")
    check_same_layout(named_tensors(a.model), named_tensors(b.model), ga, gb, "the models")
    if match and a.stack.permutations is None:
        raise LayerwiseError(f"weight matching needs the permutable units of {type(a.model).__name__}, which its "
                             "adapter does not declare (the project's MLPs do)")
    return ga


def detached(model: torch.nn.Module) -> State:
    """A copy of every tensor of ``model`` (``named_tensors`` names)."""
    return {n: t.detach().clone() for n, t in named_tensors(model).items()}


class Scorer:
    """Score points θ(α) on fixed batches with one working copy of model A.

    Data-parallel under a launcher (``layerwise.parallel``): each process scores its contiguous shard of
    ``batches`` and the float64 sums [Σ CE, Σ correct, count] are summed over the processes, so every loss curve is
    the whole data set's; BatchNorm statistics are re-estimated on all of ``bn_batches`` by every process alike."""

    def __init__(self, bundle: ModelBundle, batches: Sequence[Batch], bn_batches: Sequence[Batch] | None):
        from layerwise.parallel import shard_list

        self.model = copy.deepcopy(bundle.model).eval()
        self.stack = LayerStack(self.model)
        self.target = named_tensors(self.model)
        self.batches, self.bn_batches = shard_list(batches), bn_batches
        self.has_bn = bool(batchnorms(self.model))
        self.evaluations = 0

    def score(self, a: State, b: State, alpha: dict[str, float], reestimate: bool) -> tuple[float, float]:
        """(loss, error) of (1 − α)·a + α·b (α per tensor), BatchNorm re-estimated first if asked."""
        write_mix(self.target, a, b, alpha)
        if reestimate and self.has_bn and self.bn_batches:
            reestimate_batchnorm(self.model, self.stack, self.bn_batches)
        from layerwise.parallel import reduce_sum

        mine = output_sums(self.stack, self.batches) if self.batches else torch.zeros(3, dtype=torch.float64)
        s = reduce_sum(mine)  # a process without batches adds nothing
        self.evaluations, self.targets = self.evaluations + 1, int(s[2])
        return float(s[0] / s[2]), float(1.0 - s[1] / s[2])


def _per_tensor(groups: dict[str, list[str]], group_alpha: dict[str, float]) -> dict[str, float]:
    return {n: group_alpha[g] for g, names in groups.items() for n in names}


def run_paths(scorer: Scorer, a: State, b: State, groups: dict[str, list[str]], paths: Sequence[Path],
              alphas: Sequence[float], ends: dict[str, tuple[float, float]], bar, bn_reset: bool,
              b_is_model: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(loss, error) curves, (paths, α), of ``paths`` between the states a and b; the points that are A or B
    themselves are taken from ``ends`` (and keep their own BatchNorm statistics)."""
    loss = np.zeros((len(paths), len(alphas)))
    error = np.zeros_like(loss)
    for i, path in enumerate(paths):
        for j, alpha in enumerate(alphas):
            ga = path.group_alphas(list(groups), alpha)
            if all(v == 0.0 for v in ga.values()):
                loss[i, j], error[i, j] = ends["loss"][0], ends["error"][0]
            elif b_is_model and all(v == 1.0 for v in ga.values()):
                loss[i, j], error[i, j] = ends["loss"][1], ends["error"][1]
            else:
                loss[i, j], error[i, j] = scorer.score(a, b, _per_tensor(groups, ga), bn_reset)
            bar.update(1)
    return loss, error


def _mode_results(scorer: Scorer, a: State, b: State, groups: dict[str, list[str]], modes: Sequence[str],
                  alphas: Sequence[float], bar, *, bn_reset: bool, random_seeds: int, filter_normalised: bool,
                  seed: int, baseline: str = "models") -> dict:
    ends = {"loss": [0.0, 0.0], "error": [0.0, 0.0]}
    for k, w in enumerate((0.0, 1.0)):  # the two models, with their own statistics
        ends["loss"][k], ends["error"][k] = scorer.score(a, b, _per_tensor(groups, dict.fromkeys(groups, w)), False)
    ends = {m: tuple(v) for m, v in ends.items()}
    out: dict = {"endpoints": {"loss_a": ends["loss"][0], "loss_b": ends["loss"][1],
                               "error_a": ends["error"][0], "error_b": ends["error"][1]}, "modes": {}}
    for mode in modes:
        variants = mode_paths(mode, list(groups))
        results = {}
        for variant, paths in variants.items():
            if mode == "random":
                results[variant] = _random(scorer, a, b, groups, paths, alphas, ends, bar, bn_reset, random_seeds,
                                           filter_normalised, seed, baseline)
                continue
            loss, error = run_paths(scorer, a, b, groups, paths, alphas, ends, bar, bn_reset)
            results[variant] = curve_summary(alphas, paths, loss, error, ends, baseline)
        main, *others = variants
        out["modes"][mode] = {**results[main], **{v: results[v] for v in others}}
    return out


def _random(scorer: Scorer, a: State, b: State, groups, paths, alphas, ends, bar, bn_reset, seeds: int,
            filter_normalised: bool, seed: int, baseline: str = "models") -> dict:
    """Each group toward random targets (``random_target``: as far from A as B's group is), curves averaged over
    ``seeds`` directions; the excess is measured, as for every mode, against the ``baseline`` line (by default
    between ℒ(A) and ℒ(B), so a random step and the step toward B of the same length are compared on one scale;
    under ``path`` between the averaged curve's own ends)."""
    loss = np.zeros((len(paths), len(alphas)))
    error = np.zeros_like(loss)
    for i, path in enumerate(paths):
        names = groups[path.name]
        for s in range(seeds):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * i + s)
            target = {**a, **random_target(a, b, names, gen, filter_normalised)}
            l_, e_ = run_paths(scorer, a, target, groups, [path], alphas, ends, bar, bn_reset, b_is_model=False)
            loss[i] += l_[0] / seeds
            error[i] += e_[0] / seeds
    out = curve_summary(alphas, paths, loss, error, ends, baseline)
    out.update(seeds=seeds, filter_normalised=filter_normalised)
    return out


def count_points(modes: Sequence[str], n_groups: int, n_alphas: int, random_seeds: int) -> int:
    """How many points the modes visit (the progress bar's total)."""
    per_mode = {"full": 1, "single": 2 * n_groups, "cumulative": 2 * n_groups, "random": n_groups * random_seeds}
    return sum(per_mode[m] for m in modes) * n_alphas


def connect(a: ModelBundle, b: ModelBundle, batches: Sequence[Batch], *, modes: Sequence[str],
            alphas: Sequence[float], bn_batches: Sequence[Batch] | None = None, bn_reset: bool = True,
            match: bool = False, readout_from_b: bool = False, random_seeds: int = 3,
            filter_normalised: bool = False, seed: int = 0, progress: bool = True, baseline: str = "models") -> dict:
    """Loss and error along every path of ``modes`` between models ``a`` and ``b`` on ``batches`` (see
    ``connectivity.py``), barriers against the ``baseline`` line (``models`` or ``path``); with ``match`` also
    after permuting B's units to A's (weight matching)."""
    baseline = check_baseline(baseline, alphas)
    groups = check_pair(a, b, match)
    state_a, state_b = detached(a.model), detached(b.model)
    if readout_from_b:  # e.g. a pretrained body and its fine-tuned copy: both read out through B's head
        state_a.update({n: state_b[n] for n in groups["readout"]})
    scorer = Scorer(a, batches, bn_batches if bn_reset else None)
    runs = [("plain", state_b)]
    results: dict = {"groups": {g: len(v) for g, v in groups.items()}, "tied": tied_names(a.model),
                     "batchnorm": scorer.has_bn, "bn_reset": bn_reset and scorer.has_bn,
                     "readout_from_b": readout_from_b, "baseline": baseline, "midpoint_alpha": MIDPOINT,
                     "midpoint_interpolated": MIDPOINT not in [float(x) for x in alphas]}
    if match:
        params = {n for n, _ in a.model.named_parameters()}
        perms = weight_matching(a.stack.permutations, {n: state_a[n] for n in params if n in state_a},
                                {n: state_b[n] for n in params if n in state_b}, seed=seed)
        runs.append(("matched", permute(state_b, a.stack.permutations, perms)))
        results["matching"] = {"moved_units": {p: int((v != torch.arange(len(v))).sum()) for p, v in perms.items()}}
    total = count_points(modes, len(groups), len(alphas), random_seeds) * len(runs) + 2 * len(runs)
    with tqdm(total=total, desc="connect", unit="point", disable=not (progress and speaks())) as bar:
        for name, state in runs:
            part = _mode_results(scorer, state_a, state, groups, modes, alphas, bar, bn_reset=bn_reset,
                                 random_seeds=random_seeds, filter_normalised=filter_normalised, seed=seed,
                                 baseline=baseline)
            bar.update(2)
            if name == "plain":
                results.update(part)
            else:
                results["matched"] = part
    results["evaluations"], results["targets"] = scorer.evaluations, scorer.targets  # targets: samples or tokens
    return results
