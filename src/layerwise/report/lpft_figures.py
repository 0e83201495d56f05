"""The figures of ``layerwise lpft``: head norm along fine-tuning, feature change per layer, reliability diagrams
and per-layer calibration, one colour per recipe. Drawn on ``matplotlib.figure.Figure`` objects, never through
pyplot (as ``report.figures``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from layerwise.report.figures import _save

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
