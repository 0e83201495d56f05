"""One collector per kind of run folder: the folder's files as a :class:`~layerwise.report.collect.Run` (tables,
configuration, per-layer values), and ``collect_run``, which reads a folder of a known kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerwise import files
from layerwise.report.collect import (Run, at, by_layer, data_uri, flatten, fmt, make_table, optional, present,
                                     read_csv, read_json, scalars)
from layerwise.report.schemas import RESULTS, TrainMeta


def _analyze(folder: Path, r: dict, run: Run) -> None:
    rows = optional(run, "layers.csv", lambda: read_csv(folder, "layers.csv"))
    if rows is None:
        rows = [{"layer": ell, "accuracy": at(r.get("accuracy"), ell)} for ell in r.get("layers", [])]
    run.tables.append(make_table("per layer", rows))
    for key in ("cos_to_last", "cka_linear_to_last", r.get("metric", "accuracy"), "probe_accuracy",
                "probe_pearson"):
        if rows and key in rows[0]:
            run.per_layer[key] = {str(row.get("layer")): row.get(key) for row in rows}
    run.config = flatten(r.get("config", {})) + [("n_samples", fmt(r.get("n_samples")).text)]


def _compare(folder: Path, r: dict, run: Run) -> None:
    for side in ("a", "b"):
        ev = r.get(f"evaluation_{side}", {})
        layers = r.get(f"layers_{side}", [])
        rows = [{"layer": ell, **{k: at(v, i) for k, v in ev.items() if isinstance(v, list)}}
                for i, ell in enumerate(layers)]
        if rows:
            run.tables.append(make_table(f"model {side}: per layer", rows))
    run.config = flatten(r.get("config", {})) + [("n_samples", fmt(r.get("n_samples")).text)]


def _train(folder: Path, r: dict, run: Run) -> None:
    log = []
    text = optional(run, "log.jsonl", lambda: files.read_text(files.inside(folder, "log.jsonl"), "json"))
    for line in (text or "").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            log.append(record)
        elif line.strip():
            run.warnings.append("log.jsonl has a line that is not a JSON object (a run stopped mid-write); "
                                "it is left out")
    per_layer = {k: v for k, v in r.items() if isinstance(v, list) and v and not isinstance(v[0], (list, dict))}
    if per_layer:
        n = max(len(v) for v in per_layer.values())
        run.tables.append(make_table("per layer, last evaluation",
                                     [{"layer": i, **{k: at(v, i) for k, v in per_layer.items()}} for i in range(n)]))
        run.per_layer = {k: by_layer(v) for k, v in per_layer.items()}
    metric = r.get("metric", "accuracy")
    rows = [{**scalars(rec), f"last-layer {metric}": _last(rec.get(metric))} for rec in log]
    if rows:
        run.tables.append(make_table("training log, one row per evaluation", rows))
    meta = optional(run, "layerwise.json", lambda: read_json(folder, "layerwise.json", TrainMeta)) or {}
    run.config = flatten(meta.get("training") or {})


def _last(value: Any) -> Any:
    """The last layer's value of a per-layer list (a single number stands for itself)."""
    return at(value, len(value) - 1) if isinstance(value, list) else value


def _exit(folder: Path, r: dict, run: Run) -> None:
    run.config = flatten(scalars(r))
    models = r.get("models", [])
    run.tables.append(make_table("models", [{"model": m.get("name"), **scalars(m),
                                             **{f"calibrated {k}": v for k, v in scalars(m.get("calibration", {})).items()}}
                                            for m in models]))
    for m in models:
        acc = m.get("per_layer_accuracy", [])
        hist = m.get("exit_histogram", [])
        rows = [{"layer": i + 1, "accuracy": a, "exits at τ": at(hist, i),
                 **{k: v[i] for k, v in m.get("per_layer_metrics", {}).items() if k != "accuracy" and i < len(v)}}
                for i, a in enumerate(acc)]
        run.tables.append(make_table(f"{m.get('name')}: per layer", rows))
        run.tables.append(make_table(f"{m.get('name')}: threshold sweep", [scalars(s) for s in m.get("sweep", [])]))
    if models:
        run.per_layer["accuracy"] = by_layer(models[0].get("per_layer_accuracy", []), range(1, 1 + len(
            models[0].get("per_layer_accuracy", []))))


def _gen_eval(folder: Path, r: dict, run: Run) -> None:
    rows = optional(run, "layers.csv", lambda: read_csv(folder, "layers.csv")) or []
    run.tables.append(make_table("per layer", rows))
    models = {row.get("model") for row in rows}
    for key in ("accuracy", "perplexity", "coherence", "diversity"):
        if rows and key in rows[0]:
            run.per_layer[key] = {(f"{row.get('model')} · " if len(models) > 1 else "") + str(row.get("layer")):
                                  row.get(key) for row in rows}
    run.config = flatten(r.get("config", {})) + [("diversity convention", str(r.get("diversity_convention")))]
    run.text = optional(run, "samples.txt", lambda: files.read_text(files.inside(folder, "samples.txt")))


def _connect(folder: Path, r: dict, run: Run) -> None:
    run.config = flatten({**scalars(r), "alphas": r.get("alphas"), "endpoints": r.get("endpoints", {})})
    for prefix, res in [("", r)] + ([("matched: ", r["matched"])] if isinstance(r.get("matched"), dict) else []):
        for mode, m in res.get("modes", {}).items():
            variants = [(mode, m)] + [(f"{mode}: {k.replace('_', ' ')}", v) for k, v in m.items()
                                      if isinstance(v, dict) and "loss" in v]
            for title, v in variants:
                keys = ("midpoint_barrier_loss", "barrier_loss", "midpoint_barrier_error", "barrier_error",
                        "peak_alpha_loss", "peak_alpha_error")
                groups = v.get("groups") if isinstance(v.get("groups"), list) else []
                rows = [{"group": g, **{k: at(v[k], i) for k in keys if k in v}} for i, g in enumerate(groups)]
                run.tables.append(make_table(f"{prefix}{title}: barriers per group", rows))
                if not prefix and title == "single":
                    run.per_layer["barrier_loss (single)"] = {str(g): at(v.get("barrier_loss"), i)
                                                              for i, g in enumerate(groups)}
                    if "midpoint_barrier_loss" in v:
                        run.per_layer["midpoint barrier_loss (single)"] = {
                            str(g): at(v.get("midpoint_barrier_loss"), i) for i, g in enumerate(groups)}


def _lpft(folder: Path, r: dict, run: Run) -> None:
    run.config = flatten(r.get("options", {}))
    recipes = r.get("recipes", {})
    run.tables.append(make_table("recipes", [
        {"recipe": name, **scalars(x), "head norm start": x.get("head_norm", {}).get("start"),
         "head norm final": x.get("head_norm", {}).get("final"), "eNTK share_ft": x.get("ntk", {}).get("share_ft")}
        for name, x in recipes.items()]))
    layers: dict[int, dict] = {}
    for name, x in recipes.items():
        for key, values in (("feature change", x.get("feature_change", {}).get("relative", [])),
                            ("layer accuracy", x.get("layer_calibration", {}).get("accuracy", []))):
            for i, v in enumerate(values):
                layers.setdefault(i, {"layer": i})[f"{name}: {key}"] = v
    run.tables.append(make_table("per layer", [layers[i] for i in sorted(layers)]))
    if recipes:
        run.tables.append(make_table("claims", [{"claim": k, **(v if isinstance(v, dict) else {"value": v})}
                                                for k, v in r.get("claims", {}).items()]))
    for name, x in recipes.items():
        run.per_layer[f"{name}: feature change"] = by_layer(x.get("feature_change", {}).get("relative", []))


def _token_exit(folder: Path, r: dict, run: Run) -> None:
    """``generate --early-exit --sweep``: per model, the full decoding and one row per threshold."""
    models = r["models"] if "models" in r else [r]
    run.config = flatten(scalars(models[0])) if models else []
    for m in models:
        rows = [{**scalars(m.get("full", {})), "threshold": "full"}] + [scalars(p) for p in m.get("sweep", [])]
        run.tables.append(make_table(f"{Path(str(m.get('model', ''))).name}: threshold sweep", rows))


COLLECTORS: dict[str, Callable[[Path, dict, Run], None]] = {
    "analyze": _analyze, "compare": _compare, "train": _train, "exit": _exit, "gen-eval": _gen_eval,
    "connect": _connect, "lpft": _lpft, "generate": _token_exit}


def collect_run(folder: Path, kind: str, name: str | None = None) -> Run:
    """The :class:`Run` of a folder of a known (non-reproduce) ``kind``: its collector's tables and config, the
    results' warnings, and every PNG in the folder, embedded.

    Only regular files inside ``folder`` (symlinks resolved) are read. Its ``results.json`` (``metrics.json``)
    of the wrong shape is an error; any other file that is refused (outside the folder, not a regular file, not
    a PNG, over its size cap, of the wrong shape) is left out with one warning line on the page."""
    results_name = "metrics.json" if kind == "train" else "results.json"
    r = read_json(folder, results_name, RESULTS[kind]) if present(folder, results_name) else {}
    run = Run(kind, folder, name or folder.name, results=r if isinstance(r, dict) else {})
    COLLECTORS[kind](folder, r, run)
    run.warnings = [str(w) for w in r.get("warnings", [])] + run.warnings
    run.tables = [t for t in run.tables if t.rows]
    for path in sorted(folder.glob("*.png")):
        uri = optional(run, path.name, lambda: data_uri(folder, path.name))  # noqa: B023 (called at once)
        if uri is not None:
            run.figures.append((path.name, uri))
    return run
