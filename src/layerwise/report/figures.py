"""Figures. Drawn on ``matplotlib.figure.Figure`` objects, never through pyplot, so no backend is chosen
and no global matplotlib state is touched. Undefined (NaN) cells are left blank."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def probe_nc1(results: dict, path: Path) -> None:
    """The paper's Figure 3(b): per-layer readout accuracy (and the task's own metric when it is another) and
    linear-probe accuracy on the left axis, NC1 (log scale) on the right."""
    layers = results["layers"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if "accuracy" in results:
        ax.plot(layers, results["accuracy"], marker="s", color="black", label="readout accuracy")
    metric = results.get("metric")
    if metric and metric not in ("accuracy", "loss") and metric in results:
        ax.plot(layers, np.asarray(results[metric], float), marker="^", color="tab:green", label=f"readout {metric}")
    ax.plot(layers, results["probe_accuracy"], marker="o", color="tab:blue", label="probe accuracy")
    ax.set(xlabel="layer ℓ", ylabel="accuracy", title="Readout and linear-probe accuracy, NC1", xticks=layers)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    nc1 = np.asarray(results["nc1"], float)
    right.plot(layers, nc1, marker="d", ls="--", color="tab:red", label="NC1 (right)")
    if np.all(np.isfinite(nc1)) and np.all(nc1 > 0):
        right.set_yscale("log")
    right.set_ylabel("NC1 = tr(Σ_W Σ_B⁺)/C")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
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


def residual_panels(residual: dict[str, Sequence[float]], path: Path) -> None:
    """Per block ℓ: ‖hˡ‖/‖f(hˡ)‖ (log scale) and the cosines cos(hˡ, f(hˡ)), cos(hˡ, hˡ⁺¹) (paper Fig. 10)."""
    fig = Figure(figsize=(8, 3.4))
    left, right = fig.subplots(1, 2)
    blocks = np.arange(1, len(residual["norm_ratio"]) + 1)
    left.plot(blocks, residual["norm_ratio"], marker="o")
    left.set(yscale="log", xlabel="block", ylabel="‖h‖ / ‖f(h)‖", title="residual norm ratio")
    for key, label in (("cos_update", "cos(h, f(h))"), ("cos_adjacent", "cos(h, h + f(h))")):
        right.plot(blocks, residual[key], marker="o", label=label)
    right.set(xlabel="block", ylabel="cosine", title="update direction")
    right.legend(fontsize=8)
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


def exit_sweep(reports: Sequence[dict], path: Path) -> Figure:
    """Accuracy against the layer-count and the wall-clock speedup over a threshold sweep, one curve per model,
    its points joined in order of the speed-up (the sweep's threshold order need not be that order: the wall-clock
    speed-up is measured, and a policy's depth need not fall monotonically with its threshold)."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for key, ax in zip(("layer_speedup", "wall_speedup"), axes):
        for r in reports:
            points = sorted(r["sweep"], key=lambda p: p[key])  # noqa: B023 (sorted at once)
            ax.plot([p[key] for p in points], [p["accuracy"] for p in points], "o-", label=Path(r["name"]).name)
        ax.set(xlabel=f"{key.replace('_', ' ')} (×)", ylabel="accuracy", title=key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return fig


def layer_accuracy_curves(reports: Sequence[dict], path: Path) -> None:
    """Per-layer accuracy of each model (models of different depths side by side, paper Fig. 4), under shift and
    on a transfer task when measured (Fig. 6)."""
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for colour, r in zip(matplotlib_colours(len(reports)), reports):
        acc = r["per_layer_accuracy"]
        name = Path(r["model"]).name or r["model"]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", color=colour,
                label=f"{name}: in distribution" if "shift" in r else name)
        if "shift" in r:
            shifted = r["shift"]["per_layer_accuracy"]
            ax.plot(range(1, len(shifted) + 1), shifted, marker="s", ls="--", color=colour, label="shifted")
        if "transfer" in r:
            t = r["transfer"]["per_layer_accuracy"]
            ax.plot(range(len(t)), t, marker="^", ls=":", color=colour, label=f"transfer ({r['transfer']['data']})")
    ax.set(xlabel="layer", ylabel="accuracy", title="readout after every layer")
    ax.legend(fontsize=7)
    _save(fig, path)


def generation_panels(models: Sequence[dict], path: Path, diversity: str = "words") -> None:
    """The AlignedGPT paper's Figure 8: accuracy, perplexity, coherence and diversity per generating layer, one
    curve per model; each model's reference continuation (the corpus's own) as a dashed line of its colour."""
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    panels = (("accuracy", "next-token accuracy"), ("perplexity", "perplexity (log scale)"),
              ("coherence", "coherence: cos(prefix, continuation)"), ("diversity", f"diversity ({diversity})"))
    for i, m in enumerate(models):
        color = f"C{i}"
        for ax, (key, _) in zip(axes, panels):
            ax.plot(m["layers"], np.asarray(m[key], float), "o-", color=color, label=Path(m["model"]).name)
            ref = m.get("reference", {}).get(key)
            if ref is not None and np.isfinite(ref):
                ax.axhline(ref, color=color, linestyle="--", linewidth=1, label=f"{Path(m['model']).name}: reference")
    layers = sorted({ell for m in models for ell in m["layers"]})
    for ax, (key, title) in zip(axes, panels):
        ax.set(xlabel="generating layer ℓ", title=title, xticks=layers, xlim=(layers[0] - 0.3, layers[-1] + 0.3))
        if key == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
def token_exit_tradeoff(models: Sequence[dict], path: Path, diversity: str = "words") -> None:
    """Per-token early exit over a threshold sweep, one curve per model: quality of the generated text (full-model
    perplexity, coherence, diversity) against the mean exit layer (each point labelled with its threshold τ); the
    full model is the star at L. The mean exit layer, unlike a wall-clock ratio, does not depend on the machine's
    load (the measured speedups are in results.json)."""
    panels = [("perplexity", "full-model perplexity of the generated text")]
    if all("coherence" in m["full"] for m in models):
        panels += [("coherence", "coherence: cos(prefix, continuation)"), ("diversity", f"diversity ({diversity})")]
    fig = Figure(figsize=(4.2 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]

    def value(row: dict, key: str) -> float:
        v = row.get(key, float("nan"))
        return float(v[diversity] if isinstance(v, dict) else v)

    for i, m in enumerate(models):
        color, name = f"C{i}", Path(m.get("model", "")).name
        sweep = sorted(m["sweep"], key=lambda r: r["mean_exit_layer"])  # joined along x, not in threshold order
        for ax, (key, title) in zip(axes, panels):
            ys = [value(r, key) for r in sweep]
            ax.plot([r["mean_exit_layer"] for r in sweep], ys, "o-", color=color, label=name)
            for r, y in zip(sweep, ys):
                ax.annotate(f"{r['threshold']:g}", (r["mean_exit_layer"], y), fontsize=6,
                            color=color, textcoords="offset points", xytext=(3, 3))
            ax.plot([m["num_layers"]], [value(m["full"], key)], "*", color=color, markersize=11,
                    label=f"{name}: full model")
            ax.set(xlabel="mean exit layer", title=title)
    for ax, (key, _) in zip(axes, panels):
        if key == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(fig, path)


def excess_heatmaps(alphas: Sequence[float], panels: Sequence[tuple[str, Sequence[str], np.ndarray]],
                    path: Path) -> None:
    """One heatmap per (title, path names, excess): paths (rows) × α (columns) of the loss excess above the
    straight line between the two models, on one shared, zero-centred colour scale."""
    bound = max([float(np.nanmax(np.abs(np.asarray(e, float)))) for _, _, e in panels] + [1e-12])
    rows = [len(names) for _, names, _ in panels]
    fig = Figure(figsize=(6.4, 0.9 * len(panels) + 0.3 * sum(rows)))
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": [r + 1.5 for r in rows]})[:, 0]
    for ax, (title, names, ex) in zip(axes, panels):
        im = ax.imshow(np.asarray(ex, float), cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        ax.set(title=title, xticks=range(len(alphas)), xticklabels=[f"{a:.2g}" for a in alphas],
               yticks=range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        fig.colorbar(im, ax=ax, label="loss − line")
    axes[-1].set_xlabel("α")
    _save(fig, path)


def barrier_bars(panels: Sequence[tuple], full: dict | None, path: Path) -> None:
    """Per-path loss and error barriers, one panel per (title, groups, loss barriers, error barriers[, midpoint
    loss barriers, midpoint error barriers]): bars the maximum over α, black markers the midpoint (α = ½); the
    full-model barriers (``full``: {"loss": …, "error": …[, "midpoint_loss": …, "midpoint_error": …]}) as dashed
    (maximum) and dotted (midpoint) lines."""
    fig = Figure(figsize=(max(6.0, 0.45 * max(len(p[1]) for p in panels) + 2), 2.8 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, groups, loss, error, *mid) in zip(axes, panels):
        x = np.arange(len(groups))
        ax.bar(x - 0.2, loss, 0.4, label="loss barrier (max over α)", color="tab:blue")
        ax.bar(x + 0.2, error, 0.4, label="error barrier (max over α)", color="tab:orange")
        if len(mid) == 2 and mid[0] is not None:
            ax.plot(x - 0.2, mid[0], "kD", ms=4, label="midpoint (α = ½), loss")
            ax.plot(x + 0.2, mid[1], "kx", ms=5, label="midpoint (α = ½), error")
        if full is not None:
            ax.axhline(full["loss"], color="tab:blue", ls="--", lw=1, label="full model, loss")
            ax.axhline(full["error"], color="tab:orange", ls="--", lw=1, label="full model, error")
            if full.get("midpoint_loss") is not None:
                ax.axhline(full["midpoint_loss"], color="tab:blue", ls=":", lw=1, label="full model, midpoint loss")
        ax.set_xticks(x, groups, rotation=45, ha="right", fontsize=8)
        ax.set(title=title, ylabel="barrier")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    _save(fig, path)


def path_curves(alphas: Sequence[float], panels: Sequence[tuple[str, Sequence[str], np.ndarray]], ylabel: str,
                path: Path) -> None:
    """One panel per (title, path names, curves over α): e.g. the cumulative paths shallow→deep and back."""
    fig = Figure(figsize=(5.0 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, names, curves) in zip(axes, panels):
        colours = matplotlib_colours(len(names))
        for name, curve, colour in zip(names, np.asarray(curves, float), colours):
            ax.plot(alphas, curve, marker=".", color=colour, label=name)
        ax.set(title=title, xlabel="α", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    _save(fig, path)


def matplotlib_colours(n: int) -> list:
    """n colours along viridis (shallow dark, deep light)."""
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, max(n, 1))]
