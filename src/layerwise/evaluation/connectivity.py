"""Layer-wise linear mode connectivity: the pure mathematics (Adilova et al., "Layer-wise linear mode
connectivity", ICLR 2024; Frankle et al., "Linear mode connectivity and the lottery ticket hypothesis", 2020).

Models A and B, their tensors split into the layer stack's groups (embed, block1..L, readout). A *path*
moves some groups: θ(α) takes (1 − α)·θ_A[g] + α·θ_B[g] for the moving groups g, and the rest from A (or
from B). Along it,

    excess(α)  = ℒ(θ(α)) − ((1 − α)·ℒ(θ_A) + α·ℒ(θ_B))      (ℒ(θ_A), ℒ(θ_B): the full models' losses)
    barrier    = max_α excess(α),   and the α where it peaks,

for the loss and for the error 1 − accuracy. With α = 0 and 1 on the grid the barrier is ≥ 0 for the
full-model path (its excess is 0 at the ends); a single-group path may end away from θ_B, so its excess at
α = 1 is that hybrid's excess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from layerwise.errors import LayerwiseError

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


def linear_baseline(alphas: Sequence[float], end_a: float, end_b: float) -> np.ndarray:
    """(1 − α)·ℒ_A + α·ℒ_B on the grid."""
    a = np.asarray(alphas, float)
    return (1.0 - a) * end_a + a * end_b


def excess(alphas: Sequence[float], curve: Sequence[float], end_a: float, end_b: float) -> np.ndarray:
    """ℒ(θ(α)) − ((1 − α)·ℒ_A + α·ℒ_B): how far the path rises above the straight line between the ends."""
    return np.asarray(curve, float) - linear_baseline(alphas, end_a, end_b)


def barrier(alphas: Sequence[float], curve: Sequence[float], end_a: float, end_b: float) -> tuple[float, float]:
    """(max_α excess(α), the α where it peaks; the first such α on ties)."""
    e = excess(alphas, curve, end_a, end_b)
    i = int(np.argmax(e))
    return float(e[i]), float(alphas[i])


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


def curve_summary(alphas: Sequence[float], paths: Sequence[Path], loss: np.ndarray, error: np.ndarray,
                  ends: dict[str, Sequence[tuple[float, float]]]) -> dict:
    """The results of one variant: per path the loss and error curves, their excess over the straight line
    between its ends ``ends[metric][path] = (ℒ_A, ℒ_B)``, the barriers and the α of each peak."""
    out: dict = {"groups": [p.name for p in paths], "moving": [list(p.moving) for p in paths],
                 "rest": paths[0].rest if paths else "a"}
    for metric, curves in (("loss", loss), ("error", error)):
        out[metric] = curves.tolist()
        out[f"excess_{metric}"] = [excess(alphas, c, *e).tolist() for c, e in zip(curves, ends[metric])]
        peaks = [barrier(alphas, c, *e) for c, e in zip(curves, ends[metric])]
        out[f"barrier_{metric}"] = [v for v, _ in peaks]
        out[f"peak_alpha_{metric}"] = [a for _, a in peaks]
    return out
