"""The headline figure of each kind of run: one plot across every run of that kind, one line per run (its legend
the run's name), drawn by ``layerwise report`` from the runs' own results at the top of their section.

- ``analyze``: the readout's per-layer accuracy (or the task's metric) and COS of every layer to the last (the
  paper's key picture: standard and aligned runs in one plot); ``compare``: COS of model a's layers to model b's
  last layer, and both models' per-layer accuracy; ``train``: the per-layer metric of the last evaluation;
- ``exit``: accuracy against the layer and wall-clock speed-up of the threshold sweep, each curve sorted by its
  speed-up (a sweep is recorded in threshold order, which need not be the order of its speed-ups);
- ``gen-eval``: perplexity, coherence and diversity per generating layer;
- ``connect``: the loss barrier per group of the ``single`` mode (every ``*barrier_loss*`` key a run holds, the
  maximum over α and the midpoint alike), the whole model's as a dashed line of the run's colour;
- ``lpft``: the head's norm along fine-tuning and the feature change per layer, a line per run and recipe;
- ``generate`` (per-token exit): the full-model perplexity of the text against the mean exit layer, sorted.

Each extractor reads a run's results defensively (a file of an odd shape gives no line, never an error): a run's
``results.json`` is an untrusted file, typed only where the report's schemas type it.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from layerwise.report.collect import Run


@dataclass(frozen=True)
class Panel:
    """One axes of a headline figure: its title, axis labels and whether its y axis is logarithmic."""

    title: str
    xlabel: str
    ylabel: str
    log: bool = False


@dataclass
class Line:
    """One run's curve on a panel; ``level``: a horizontal reference line instead (y only, e.g. a whole-model
    barrier); ``ticks``: labels of x positions 0..n−1 where x is categorical (the groups of ``connect``);
    ``of``: the line whose colour it shares (its own label when empty)."""

    label: str
    x: list[float]
    y: list[float]
    level: bool = False
    ticks: list[str] = field(default_factory=list)
    of: str = ""


Series = list[tuple[Panel, Line]]


def floats(values: Any) -> list[float] | None:
    """``values`` as floats (None, ±inf and numbers beyond a float → NaN) when it is a non-empty list of numbers;
    None otherwise."""
    if not isinstance(values, list) or not values:
        return None
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return None
    return [_finite(v) for v in values]


def _finite(v: int | float | None) -> float:
    try:
        x = math.nan if v is None else float(v)
    except OverflowError:  # an integer beyond a float's range
        return math.nan
    return x if math.isfinite(x) else math.nan


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _line(label: str, x: Any, y: Any) -> Line | None:
    """A curve from x and y read from a file: numbers of one length, some of them finite; else None."""
    xs, ys = floats(x), floats(y)
    if xs is None or ys is None or len(xs) != len(ys) or not any(map(math.isfinite, ys)):
        return None
    return Line(label, xs, ys)


def _sorted_curve(label: str, rows: list, xkey: str, ykey: str) -> Line | None:
    """The points (row[xkey], row[ykey]) of a sweep, sorted by x (ties in the order recorded)."""
    points = [(_dict(r).get(xkey), _dict(r).get(ykey)) for r in rows]
    line = _line(label, [p[0] for p in points], [p[1] for p in points])
    if line is None:
        return None
    order = sorted(range(len(line.x)), key=lambda i: (math.isnan(line.x[i]), line.x[i]))
    return Line(label, [line.x[i] for i in order], [line.y[i] for i in order])


def _named(run: str, sub: str, many: bool) -> str:
    """A line's legend: the run's name, with the model or recipe where the run holds several."""
    return f"{run} · {sub}" if many else run


def _analyze(run: Run) -> Series:
    r = run.results
    metric = r.get("metric") if isinstance(r.get("metric"), str) and floats(r.get(r.get("metric"))) else "accuracy"
    last = [row[-1] if isinstance(row, list) and row else None for row in _list(r.get("cos"))]
    out = [(Panel(f"readout {metric} per layer", "layer ℓ", metric), _line(run.name, r.get("layers"), r.get(metric))),
           (Panel("COS to the last layer", "layer ℓ", "COS(hˡ, hᴸ)"), _line(run.name, r.get("layers"), last))]
    return [(p, ln) for p, ln in out if ln is not None]


def _compare(run: Run) -> Series:
    r = run.results
    last = [row[-1] if isinstance(row, list) and row else None for row in _list(r.get("cos"))]
    out = [(Panel("COS to model b's last layer", "model a's layer ℓ", "COS(aˡ, bᴸ)"),
            _line(run.name, r.get("layers_a"), last))]
    for side in ("a", "b"):
        out.append((Panel("readout accuracy per layer", "layer ℓ", "accuracy"),
                    _line(f"{run.name} · model {side}", r.get(f"layers_{side}"),
                          _dict(r.get(f"evaluation_{side}")).get("accuracy"))))
    return [(p, ln) for p, ln in out if ln is not None]


def _train(run: Run) -> Series:
    r = run.results
    metric = r.get("metric") if isinstance(r.get("metric"), str) else "accuracy"
    values = floats(r.get(metric))
    line = _line(run.name, list(range(len(values))), values) if values else None
    return [(Panel(f"{metric} per layer, last evaluation", "layer ℓ", metric), line)] if line else []


def _exit(run: Run) -> Series:
    models = [m for m in _list(run.results.get("models")) if isinstance(m, dict)]
    out = []
    for key in ("layer_speedup", "wall_speedup"):
        panel = Panel(f"accuracy against {key.replace('_', ' ')}", f"{key.replace('_', ' ')} (×)", "accuracy")
        for m in models:
            label = _named(run.name, Path(str(m.get("name", ""))).name, len(models) > 1)
            out.append((panel, _sorted_curve(label, _list(m.get("sweep")), key, "accuracy")))
    return [(p, ln) for p, ln in out if ln is not None]


def _gen_eval(run: Run) -> Series:
    models = [m for m in _list(run.results.get("models")) if isinstance(m, dict)]
    out = []
    for key, log in (("perplexity", True), ("coherence", False), ("diversity", False)):
        panel = Panel(f"{key} per generating layer", "generating layer ℓ", key, log)
        for m in models:
            label = _named(run.name, Path(str(m.get("model", ""))).name, len(models) > 1)
            out.append((panel, _line(label, m.get("layers"), m.get(key))))
    return [(p, ln) for p, ln in out if ln is not None]


def _connect(run: Run) -> Series:
    modes = _dict(run.results.get("modes"))
    single, full = _dict(modes.get("single")), _dict(modes.get("full"))
    groups = [str(g) for g in _list(single.get("groups"))]
    out = []
    for key in [k for k in single if "barrier_loss" in k]:  # barrier_loss (max over α), a midpoint key alike
        values = floats(single.get(key))
        if values is None or len(values) != len(groups):
            continue
        panel = Panel(f"{key.replace('_', ' ')} per group (single mode)", "group moved alone", "loss barrier")
        out.append((panel, Line(run.name, [float(i) for i in range(len(groups))], values, ticks=groups)))
        whole = floats(full.get(key))
        if whole and len(whole) == 1:
            out.append((panel, Line(f"{run.name}: whole model", [], whole, level=True, of=run.name)))
    return out


def _lpft(run: Run) -> Series:
    recipes = {k: v for k, v in _dict(run.results.get("recipes")).items() if isinstance(v, dict)}
    out = []
    for name, x in recipes.items():
        label = _named(run.name, name, True)
        traj = [t for t in _list(x.get("head_norm_trajectory")) if isinstance(t, dict)]
        panel = Panel("head norm along fine-tuning", "optimizer step", "‖W‖_F")
        final = floats([_dict(x.get("head_norm")).get("final")])
        if traj:
            out.append((panel, _line(label, [t.get("step") for t in traj], [t.get("frobenius") for t in traj])))
        elif final:  # linear probing alone: no fine-tuning steps, its head's norm as a level
            out.append((panel, Line(f"{label}: no fine-tuning", [], final, level=True, of=label)))
        change = floats(_dict(x.get("feature_change")).get("relative"))
        out.append((Panel("feature change per layer", "layer ℓ", "‖hˡ_ft − hˡ_pre‖ / ‖hˡ_pre‖"),
                    _line(label, list(range(len(change))), change) if change else None))
    return [(p, ln) for p, ln in out if ln is not None]


def _generate(run: Run) -> Series:
    r = run.results
    models = [m for m in (_list(r.get("models")) if "models" in r else [r]) if isinstance(m, dict)]
    panel = Panel("perplexity of the text against the mean exit layer", "mean exit layer", "perplexity", True)
    out = [(panel, _sorted_curve(_named(run.name, Path(str(m.get("model", ""))).name, len(models) > 1),
                                 _list(m.get("sweep")), "mean_exit_layer", "perplexity")) for m in models]
    return [(p, ln) for p, ln in out if ln is not None]


EXTRACTORS: dict[str, Callable[[Run], Series]] = {
    "analyze": _analyze, "compare": _compare, "train": _train, "exit": _exit, "gen-eval": _gen_eval,
    "connect": _connect, "lpft": _lpft, "generate": _generate}


def headline(kind: str, runs: Sequence[Run]) -> Figure | None:
    """The headline figure of ``runs`` (all of one ``kind``): a panel per quantity, a line per run in one colour
    across panels; None when no run holds any of it."""
    series = [s for run in runs for s in EXTRACTORS.get(kind, lambda _: [])(run)]
    panels = list(dict.fromkeys(p for p, _ in series))
    if not panels:
        return None
    labels = list(dict.fromkeys(ln.of or ln.label for _, ln in series))
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for p, ln in series:
            if p != panel:
                continue
            c = colour[ln.of or ln.label]
            if ln.level:
                if math.isfinite(ln.y[0]):
                    ax.axhline(ln.y[0], color=c, ls="--", lw=1, label=ln.label)
                continue
            ax.plot(ln.x, ln.y, "o-", color=c, markersize=4, label=ln.label)
            if ln.ticks:
                ax.set_xticks(ln.x, ln.ticks, rotation=45, ha="right", fontsize=7)
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ys = [v for p, ln in series if p == panel for v in ln.y if math.isfinite(v)]
        if panel.log and ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def png_uri(fig: Figure) -> str:
    """``fig`` as a PNG data URI (drawn by the Agg canvas ``Figure.savefig`` picks, no pyplot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
