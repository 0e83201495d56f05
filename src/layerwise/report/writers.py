"""What each command writes into its output folder: results.json, tables and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from layerwise.report.figures import (
    cos_boxplot,
    exit_histograms,
    exit_sweep,
    feature_change_curves,
    head_norm_curves,
    heatmap,
    layer_calibration_curves,
    layer_curves,
    reliability_diagrams,
)
from layerwise.report.serialize import jsonable, write_json

RESULT_DIGITS = 10  # analysis results are rounded to 10 decimals in results.json and layers.csv


def _matrix_keys(results: dict) -> list[str]:
    return [k for k, v in results.items() if isinstance(v, np.ndarray) and v.ndim == 2 and k != "cos_per_sample_to_last"]


def write_csv(rows: list[dict], path: Path) -> None:
    """One row per dict; None and NaN as empty cells."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in jsonable(row, RESULT_DIGITS).items()})


def layer_rows(results: dict, matrices: list[str]) -> list[dict]:
    """One row per layer: each measure against the last layer, the readout metrics, the residual statistics."""
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
    return rows


def write_analysis(results: dict, out: Path) -> None:
    """``layerwise analyze``: results.json, layers.csv, one heatmap per measure, curves and box plot."""
    out.mkdir(parents=True, exist_ok=True)
    matrices = _matrix_keys(results)
    for key in matrices:
        heatmap(results[key], key, out / f"heatmap_{key}.png")
    layer_curves(results, out / "similarity_vs_last.png")
    if "cos_per_sample_to_last" in results:
        cos_boxplot(np.asarray(results["cos_per_sample_to_last"], float), out / "cos_boxplot.png")
    write_csv(layer_rows(results, matrices), out / "layers.csv")
    write_json(results, out / "results.json", RESULT_DIGITS)


def write_compare(results: dict, out: Path) -> None:
    """``layerwise compare``: results.json and one L_a × L_b heatmap per measure."""
    out.mkdir(parents=True, exist_ok=True)
    for key in _matrix_keys(results):
        heatmap(results[key], f"{key}: model a (rows) vs model b", out / f"heatmap_{key}.png",
                xlabel="model b layer", ylabel="model a layer")
    write_json(results, out / "results.json", RESULT_DIGITS)


def write_exit(results: dict, out: Path) -> None:
    """``layerwise exit``: results.json, the exit histograms and the threshold sweep."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out / "results.json")
    exit_histograms(results["models"], out / "exit_histogram.png")
    exit_sweep(results["models"], out / "sweep.png")


def write_lpft(results: dict, out: Path) -> None:
    """``layerwise lpft``: results.json (all recipes), one results.json per recipe folder, and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    for name, recipe in results["recipes"].items():
        write_json(recipe, out / name / "results.json")
    write_json(results, out / "results.json")
    head_norm_curves(results["recipes"], out / "head_norm.png")
    feature_change_curves(results["recipes"], out / "feature_change.png")
    reliability_diagrams(results["recipes"], out / "reliability.png")
    layer_calibration_curves(results["recipes"], out / "layer_calibration.png")
