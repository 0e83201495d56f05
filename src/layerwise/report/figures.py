"""Figures. Drawn on ``matplotlib.figure.Figure`` objects, never through pyplot, so no backend is chosen
and no global matplotlib state is touched. Undefined (NaN) cells are left blank."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import cbook
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def heatmap(matrix: np.ndarray, title: str, path: Path, xlabel: str = "layer", ylabel: str = "layer") -> None:
    """A layer × layer matrix; NaN cells blank."""
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    finite = np.isfinite(matrix).any()
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", origin="lower",
                   vmin=np.nanmin(matrix) if finite else 0, vmax=np.nanmax(matrix) if finite else 1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def layer_curves(results: dict, path: Path) -> None:
    """COS and CKA of every layer against the last, with the layer-wise readout accuracy."""
    layers = results["layers"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, label in (("cos", "COS to last"), ("cka_linear", "CKA to last"),
                       ("cka_linear_debiased", "debiased CKA to last")):
        if key in results:
            ax.plot(layers, np.asarray(results[key], float)[:, -1], marker="o", label=label)
    if "accuracy" in results:
        ax.plot(layers, results["accuracy"], marker="s", color="black", label="readout accuracy")
    ax.set(xlabel="layer ℓ", ylabel="value", title="Similarity to the last layer and layer-wise accuracy",
           ylim=(min(0.0, ax.get_ylim()[0]), 1.02))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def cos_boxplot(per_sample: np.ndarray, path: Path) -> None:
    """Per-sample COS of each layer against the last (undefined samples/layers omitted): a box from the first
    to the third quartile, the median, and whiskers to the furthest sample within 1.5 IQR (no outliers).

    Drawn from ``cbook.boxplot_stats`` rather than ``Axes.boxplot``, which reads every rcParam and so
    resolves (and imports) a plotting backend."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for ell, col in enumerate(per_sample.T):
        col = col[np.isfinite(col)]
        if not len(col):
            continue
        s = cbook.boxplot_stats(col, whis=1.5)[0]
        ax.add_patch(Rectangle((ell - 0.25, s["q1"]), 0.5, s["q3"] - s["q1"], fill=False, edgecolor="black"))
        ax.hlines(s["med"], ell - 0.25, ell + 0.25, colors="tab:orange")
        ax.vlines([ell, ell], [s["whislo"], s["q3"]], [s["q1"], s["whishi"]], colors="black")
        ax.hlines([s["whislo"], s["whishi"]], ell - 0.12, ell + 0.12, colors="black")
    ax.set(xlabel="layer ℓ", ylabel="COS(hˡ, hᴸ) per sample", title="Per-sample COS to the last layer",
           xticks=range(per_sample.shape[1]), xlim=(-0.6, per_sample.shape[1] - 0.4))
    ax.autoscale_view(scalex=False)
    ax.grid(alpha=0.3)
    _save(fig, path)


def exit_histograms(reports: Sequence[dict], path: Path) -> None:
    """One bar chart of exit layers per model."""
    fig = Figure(figsize=(4 * len(reports), 3.2))
    axes = fig.subplots(1, len(reports), squeeze=False)
    for ax, r in zip(axes[0], reports):
        hist = r["exit_histogram"]
        ax.bar(range(1, len(hist) + 1), hist, color="tab:blue")
        ax.set(title=f"{Path(r['name']).name}: {r['policy']} τ={r['threshold']:g}", xlabel="exit layer",
               ylabel="samples", xticks=range(1, len(hist) + 1))
    _save(fig, path)


def exit_sweep(reports: Sequence[dict], path: Path) -> None:
    """Accuracy against the layer-count and the wall-clock speedup over a threshold sweep, one curve per model."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for key, ax in zip(("layer_speedup", "wall_speedup"), axes):
        for r in reports:
            ax.plot([p[key] for p in r["sweep"]], [p["accuracy"] for p in r["sweep"]], "o-", label=Path(r["name"]).name)
        ax.set(xlabel=f"{key.replace('_', ' ')} (×)", ylabel="accuracy", title=key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


RECIPE_COLORS = {"ft": "tab:blue", "lp": "tab:gray", "lpft": "tab:red"}


def head_norm_curves(recipes: dict[str, dict], path: Path) -> None:
    """‖W‖_F of the head along fine-tuning (left) and each class row's norm (right), one colour per recipe."""
    fig = Figure(figsize=(10, 3.8))
    ax_f, ax_r = fig.subplots(1, 2)
    for name, r in recipes.items():
        traj = r.get("head_norm_trajectory") or []
        color = RECIPE_COLORS.get(name)
        if traj:
            steps = [t["step"] for t in traj]
            ax_f.plot(steps, [t["frobenius"] for t in traj], color=color, label=f"{name} (lr {r['lr']:g})")
            rows = np.asarray([t["rows"] for t in traj], float)
            for c in range(rows.shape[1]):
                ax_r.plot(steps, rows[:, c], color=color, linestyle=("-", "--", ":", "-.")[c % 4],
                          label=f"{name} class {c}" if rows.shape[1] <= 4 else None)
        else:
            ax_f.axhline(r["head_norm"]["final"], color=color, linestyle=":", label=f"{name} (no fine-tuning)")
    ax_f.set(xlabel="optimizer step", ylabel="‖W‖_F", title="Head norm along fine-tuning")
    ax_r.set(xlabel="optimizer step", ylabel="‖W_c‖", title="Per-class row norms")
    for ax in (ax_f, ax_r):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def feature_change_curves(recipes: dict[str, dict], path: Path) -> None:
    """Per layer: the mean relative feature change against the pretrained model (left) and COS to it (right)."""
    fig = Figure(figsize=(10, 3.8))
    ax_c, ax_s = fig.subplots(1, 2)
    for name, r in recipes.items():
        fc = r["feature_change"]
        layers = range(len(fc["relative"]))
        ax_c.plot(layers, fc["relative"], marker="o", color=RECIPE_COLORS.get(name), label=name)
        ax_s.plot(layers, fc["cos"], marker="o", color=RECIPE_COLORS.get(name), label=name)
    ax_c.set(xlabel="layer ℓ", ylabel="mean ‖hˡ_ft − hˡ_pre‖ / ‖hˡ_pre‖", title="Feature change per layer")
    ax_s.set(xlabel="layer ℓ", ylabel="COS(hˡ_ft, hˡ_pre)", title="Similarity to the pretrained layer")
    for ax in (ax_c, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def reliability_diagrams(recipes: dict[str, dict], path: Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, one panel per recipe."""
    fig = Figure(figsize=(4 * len(recipes), 3.8))
    axes = fig.subplots(1, len(recipes), squeeze=False)[0]
    for ax, (name, r) in zip(axes, recipes.items()):
        cal = r["calibration"]
        for key, color, label in (("before", "tab:red", "before"), ("after", "tab:green", "after TS")):
            rel = cal[key]["reliability"]
            edges = np.asarray(rel["edges"], float)
            acc = np.asarray([np.nan if a is None else a for a in rel["accuracy"]], float)
            ax.bar(edges[:-1], np.nan_to_num(acc), width=np.diff(edges), align="edge", alpha=0.45, color=color,
                   edgecolor=color, label=f"{label}: ECE {cal[key]['ece']:.3f}")
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
               title=f"{name} (T = {cal['temperature']:.2f})")
        ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def layer_calibration_curves(recipes: dict[str, dict], path: Path) -> None:
    """ECE of the readout after every layer, before (solid) and after (dashed) a per-layer temperature."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for name, r in recipes.items():
        lc = r["layer_calibration"]
        layers = range(1, len(lc["ece"]) + 1)
        ax.plot(layers, lc["ece"], marker="o", color=RECIPE_COLORS.get(name), label=f"{name}")
        ax.plot(layers, lc["ece_temperature_scaled"], marker="x", linestyle="--", color=RECIPE_COLORS.get(name),
                label=f"{name}, TS")
    ax.set(xlabel="layer ℓ", ylabel="ECE (15 bins)", title="Readout calibration after every layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
