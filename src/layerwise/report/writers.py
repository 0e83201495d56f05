"""What each command writes into its output folder: results.json, tables and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from layerwise.report.figures import (
    barrier_bars,
    cos_boxplot,
    excess_heatmaps,
    exit_histograms,
    exit_sweep,
    generation_panels,
    heatmap,
    layer_accuracy_curves,
    layer_curves,
    path_curves,
    probe_nc1,
    residual_panels,
    token_exit_tradeoff,
)
from layerwise.report.lpft_figures import (feature_change_curves, head_norm_curves, layer_calibration_curves,
                                           reliability_diagrams)
from layerwise.report.serialize import atomic_write_text, jsonable, write_json

# Per-layer values copied into layers.csv: readout metrics (GLUE's among them), probe accuracy and NC1.
LAYER_KEYS = ("accuracy", "loss", "perplexity", "f1", "mcc", "pearson", "spearman", "probe_accuracy", "probe_C", "nc1",
              "probe_pearson", "probe_spearman", "probe_alpha")
RESULT_DIGITS = 10  # analysis results are rounded to 10 decimals in results.json and layers.csv


def tagged(command: str, results: dict) -> dict:
    """``results`` as written to disk: led by ``"command"``, so that ``layerwise report`` knows what wrote it."""
    return {"command": command, **{k: v for k, v in results.items() if k != "command"}}


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
        for key in LAYER_KEYS:
            if key in results:
                row[key] = results[key][ell]
        for key, values in results["residual"].items():
            row[f"residual_{key}"] = values[ell] if ell < len(values) else None  # L blocks, L+1 layers
        rows.append(row)
    return rows


def write_analysis(results: dict, out: Path) -> None:
    """``layerwise analyze``: results.json, layers.csv, one heatmap per measure, curves and box plot, and the
    probe/NC1 figure when the probe ran."""
    out.mkdir(parents=True, exist_ok=True)
    matrices = _matrix_keys(results)
    for key in matrices:
        heatmap(results[key], key, out / f"heatmap_{key}.png")
    layer_curves(results, out / "similarity_vs_last.png")
    if "cos_per_sample_to_last" in results:
        cos_boxplot(np.asarray(results["cos_per_sample_to_last"], float), out / "cos_boxplot.png")
    if "probe_accuracy" in results:
        probe_nc1(results, out / "probe_nc1.png")
    if results.get("residual"):
        residual_panels(results["residual"], out / "residual.png")
    write_csv(layer_rows(results, matrices), out / "layers.csv")
    write_json(tagged("analyze", results), out / "results.json", RESULT_DIGITS)


def write_compare(results: dict, out: Path) -> None:
    """``layerwise compare``: results.json and one L_a × L_b heatmap per measure."""
    out.mkdir(parents=True, exist_ok=True)
    for key in _matrix_keys(results):
        heatmap(results[key], f"{key}: model a (rows) vs model b", out / f"heatmap_{key}.png",
                xlabel="model b layer", ylabel="model a layer")
    write_json(tagged("compare", results), out / "results.json", RESULT_DIGITS)


def write_exit(results: dict, out: Path) -> None:
    """``layerwise exit``: results.json, the exit histograms, the threshold sweep and the per-layer accuracy
    (with shift and transfer when asked)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(tagged("exit", results), out / "results.json")
    exit_histograms(results["models"], out / "exit_histogram.png")
    exit_sweep(results["models"], out / "sweep.png")
    layer_accuracy_curves(results["models"], out / "per_layer_accuracy.png")


def generation_rows(results: dict) -> list[dict]:
    """One row per (model, layer) of ``gen-eval``: the four Figure-8 scores, diversity under every convention,
    and the reference continuation's scores."""
    rows = []
    for m in results["models"]:
        ref = m["reference"]
        for i, ell in enumerate(m["layers"]):
            row = {"model": m["model"], "layer": ell}
            row.update({k: m[k][i] for k in ("accuracy", "perplexity", "coherence", "diversity")})
            row.update({f"diversity_{c}": v[i] for c, v in m["diversity_by_convention"].items()})
            row.update(reference_coherence=ref["coherence"], reference_diversity=ref["diversity"])
            rows.append(row)
    return rows


def sample_text(results: dict) -> str:
    """samples.txt: per model and prompt, the prefix, the corpus's continuation, and each layer's, one line each."""

    def one_line(text: str) -> str:
        return text.replace("\r", "\\r").replace("\n", "\\n")  # a line break shows as \n

    lines = []
    for m in results["models"]:
        s = m["samples"]
        for j, prefix in enumerate(s["prefix"]):
            lines += [f"=== {m['model']} · prompt {j + 1} ===", f"PREFIX: {one_line(prefix)}",
                      f"REFERENCE: {one_line(s['reference'][j])}"]
            lines += [f"LAYER {ell}: {one_line(texts[j])}" for ell, texts in s["layers"].items()]
            lines.append("")
    return "\n".join(lines)


def write_gen_eval(results: dict, out: Path) -> None:
    """``layerwise gen-eval``: results.json, layers.csv, the four-panel figure and samples.txt."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(generation_rows(results), out / "layers.csv")
    generation_panels(results["models"], out / "generation.png", results["diversity_convention"])
    atomic_write_text(sample_text(results), out / "samples.txt")
    write_json(tagged("gen-eval", results), out / "results.json", RESULT_DIGITS)


def write_token_exit(models: list[dict], out: Path) -> None:
    """``generate --early-exit --sweep``: results.json (one sweep per model) and token_exit.png."""
    out.mkdir(parents=True, exist_ok=True)
    token_exit_tradeoff(models, out / "token_exit.png")
    write_json(tagged("generate", models[0] if len(models) == 1 else {"models": models}), out / "results.json",
               RESULT_DIGITS)


def _connect_variants(modes: dict) -> list[tuple[str, dict]]:
    """(title, results) of every variant of every mode: ``single`` and its ``rest_from_b``, and so on."""
    out = []
    for mode, res in modes.items():
        out.append((mode, res))
        out += [(f"{mode}: {k.replace('_', ' ')}", v) for k, v in res.items() if isinstance(v, dict) and "loss" in v]
    return out


def write_connect(results: dict, out: Path) -> None:
    """``layerwise connect``: results.json, heatmaps of the loss excess (paths × α) of every variant, the per-group
    barriers (barriers.png) and the cumulative curves (cumulative.png); ``matched_*`` after weight matching."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(tagged("connect", results), out / "results.json")
    runs = [("", results)] + ([("matched_", results["matched"])] if "matched" in results else [])
    alphas = results["alphas"]
    for prefix, run in runs:
        modes = run["modes"]
        variants = _connect_variants(modes)
        excess_heatmaps(alphas, [(f"{prefix}{title}", res["groups"], res["excess_loss"]) for title, res in variants],
                        out / f"{prefix}excess.png")
        full = modes.get("full")
        panels = [(title, res["groups"], res["barrier_loss"], res["barrier_error"], res.get("midpoint_barrier_loss"),
                   res.get("midpoint_barrier_error")) for title, res in variants
                  if title != "full" and not title.startswith("cumulative")]
        if panels:
            barrier_bars(panels, None if full is None else {
                "loss": full["barrier_loss"][0], "error": full["barrier_error"][0],
                "midpoint_loss": (full.get("midpoint_barrier_loss") or [None])[0]}, out / f"{prefix}barriers.png")
        if "cumulative" in modes:
            c = modes["cumulative"]
            path_curves(alphas, [("shallow → deep", c["groups"], c["loss"]),
                                 ("deep → shallow", c["deep_to_shallow"]["groups"], c["deep_to_shallow"]["loss"])],
                        "loss", out / f"{prefix}cumulative.png")


def write_lpft(results: dict, out: Path) -> None:
    """``layerwise lpft``: results.json (all recipes), one results.json per recipe folder, and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    for name, recipe in results["recipes"].items():
        write_json(recipe, out / name / "results.json")
    write_json(tagged("lpft", results), out / "results.json")
    head_norm_curves(results["recipes"], out / "head_norm.png")
    feature_change_curves(results["recipes"], out / "feature_change.png")
    reliability_diagrams(results["recipes"], out / "reliability.png")
    layer_calibration_curves(results["recipes"], out / "layer_calibration.png")
