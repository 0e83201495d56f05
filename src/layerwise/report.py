"""Reports: results.json (NaN → null), per-layer CSV, and figures (undefined cells left blank)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Measure names in results.json: linear CKA is spelled out, as users of other libraries expect.
JSON_NAMES = {"cka": "cka_linear", "cka_debiased": "cka_linear_debiased"}


def json_name(measure: str) -> str:
    return JSON_NAMES.get(measure, measure)


def jsonable(x: Any) -> Any:
    """numpy/torch → lists; NaN/Inf → None (JSON has no NaN, and a silent NaN is a bug)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 10)
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def unique_messages(caught) -> list[str]:
    """Our own warnings (undefined layers, subsampling), once each; third-party chatter is dropped."""
    seen: list[str] = []
    for w in caught:
        if "layerwise" not in str(w.filename):
            continue
        msg = str(w.message).splitlines()[0]
        if msg not in seen:
            seen.append(msg)
    return seen


def write_json(obj: Any, path: Path) -> None:
    from layerwise.zoo import atomic_save_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_json(jsonable(obj), path)


def _matrix_keys(results: dict) -> list[str]:
    return [k for k, v in results.items() if isinstance(v, np.ndarray) and v.ndim == 2 and k != "cos_per_sample_to_last"]


def heatmap(matrix: np.ndarray, title: str, path: Path, xlabel: str = "layer", ylabel: str = "layer") -> None:
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", origin="lower", vmin=np.nanmin(matrix) if
                   np.isfinite(matrix).any() else 0, vmax=np.nanmax(matrix) if np.isfinite(matrix).any() else 1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_curves(results: dict, path: Path) -> None:
    """COS and CKA of every layer against the last, with the layer-wise readout accuracy."""
    layers = results["layers"]
    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cos_boxplot(per_sample: np.ndarray, path: Path) -> None:
    """Per-sample COS of each layer against the last (undefined samples/layers omitted)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    columns = [col[np.isfinite(col)] for col in per_sample.T]
    ax.boxplot([c if len(c) else [np.nan] for c in columns], positions=range(len(columns)), showfliers=False)
    ax.set(xlabel="layer ℓ", ylabel="COS(hˡ, hᴸ) per sample", title="Per-sample COS to the last layer")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in jsonable(row).items()})


def write_analysis(results: dict, out: Path) -> None:
    """results.json, layers.csv and the figures of ``layerwise analyze``."""
    out.mkdir(parents=True, exist_ok=True)
    matrices = _matrix_keys(results)
    for key in matrices:
        heatmap(results[key], key, out / f"heatmap_{key}.png")
    layer_curves(results, out / "similarity_vs_last.png")
    if "cos_per_sample_to_last" in results:
        cos_boxplot(np.asarray(results["cos_per_sample_to_last"], float), out / "cos_boxplot.png")
    rows = []
    for ell in results["layers"]:
        row: dict = {"layer": ell}
        for key in matrices:
            row[f"{key}_to_last"] = float(results[key][ell, -1])
        for key in ("accuracy", "loss", "perplexity"):
            if key in results:
                row[key] = results[key][ell]
        for key, values in results["residual"].items():
            row[f"residual_{key}"] = values[ell] if ell < len(values) else None  # L blocks, L+1 layers
        rows.append(row)
    _csv(rows, out / "layers.csv")
    write_json(results, out / "results.json")


def write_compare(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for key in _matrix_keys(results):
        heatmap(results[key], f"{key}: model a (rows) vs model b", out / f"heatmap_{key}.png",
                xlabel="model b layer", ylabel="model a layer")
    write_json(results, out / "results.json")
