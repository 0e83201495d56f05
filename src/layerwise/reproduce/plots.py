"""A recipe's own figure drawn across its steps (and seeds): per-layer curves from several results files in
panels, each the mean over seeds with its 95 % t band, so one picture shows what several steps measured.

    plots:
    - file: fig6a-corruptions.png            # written into OUT
      title: Per-layer accuracy under corruption
      ylabel: accuracy
      panels:
      - title: gaussian_noise
        lines:
        - {label: standard, file: exit-noise-2/results.json, key: models.0.shift.per_layer_accuracy,
           first_layer: 1, style: C0--}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from layerwise.reproduce.verdicts import lookup
from layerwise.schema import Options


class Line(Options):
    """One curve: a per-layer list in a step's results file."""

    label: str
    file: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*/[^/].*$")
    key: str
    first_layer: int = 0  # the layer of the list's first value (exit's lists start at 1)
    style: str = ""  # a matplotlib format string, e.g. "C0--"

    @property
    def step(self) -> str:
        return self.file.split("/", 1)[0]


class Panel(Options):
    title: str = ""
    lines: list[Line] = Field(min_length=1)


class Plot(Options):
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.png$")
    title: str = ""
    ylabel: str = ""
    sharey: bool = True  # False where the panels plot different quantities (accuracy beside COS)
    panels: list[Panel] = Field(min_length=1)


def band(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean per layer, half-width of the 95 % t interval per layer, None for one seed) of (seeds, layers)."""
    from scipy import stats

    mean = rows.mean(axis=0)
    if len(rows) < 2:
        return mean, None
    return mean, stats.t.ppf(0.975, len(rows) - 1) * rows.std(axis=0, ddof=1) / np.sqrt(len(rows))


def read_line(line: Line, folders: list[dict[str, str]], out: Path) -> np.ndarray:
    """(seeds, layers): the line's list in every seed's folder of its step (null → NaN)."""
    from layerwise.files import read_json

    rows = []
    for folder_of in folders:
        rel = folder_of.get(line.step, line.step) + "/" + line.file.split("/", 1)[1]
        value = lookup(read_json(out / rel, kind="json"), line.key, rel)
        rows.append([np.nan if v is None else v for v in (value if isinstance(value, list) else [value])])
    return np.asarray(rows, dtype=np.float64)


def draw(plot: Plot, folders: list[dict[str, str]], out: Path) -> Path:
    """The plot, one panel per column, into ``out/plot.file``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(plot.panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.6, 3.4), sharey=plot.sharey, squeeze=False)
    for ax, panel in zip(axes[0], plot.panels):
        for line in panel.lines:
            rows = read_line(line, folders, out)
            mean, half = band(rows)
            layers = np.arange(line.first_layer, line.first_layer + mean.size)
            (drawn,) = ax.plot(layers, mean, line.style or "-", label=line.label, marker=".")
            if half is not None:
                ax.fill_between(layers, mean - half, mean + half, color=drawn.get_color(), alpha=0.15, lw=0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(plot.ylabel)
    axes[0][-1].legend(fontsize=8, loc="best")
    seeds = len(folders)
    fig.suptitle(plot.title + (f" (mean of {seeds} seeds, 95 % band)" if seeds > 1 else ""), fontsize=11)
    fig.tight_layout()
    path = out / plot.file
    from layerwise.report.serialize import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


__all__ = ["Line", "Panel", "Plot", "band", "draw", "read_line"]
