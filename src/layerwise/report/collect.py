"""What ``layerwise report`` reads from a run folder: its kind, configuration, warnings, figures and per-layer tables.

A folder's kind is the ``"command"`` its ``results.json`` (``metrics.json`` for ``train``) names, or, for folders
written before that key existed, what its files look like. Each kind has one collector, which turns the folder's
files into a :class:`Run`: plain data (cells already formatted), which the HTML template only lays out.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError

KINDS = ("analyze", "compare", "train", "exit", "gen-eval", "connect", "lpft", "generate")
MISSING = "–"


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown, and the number it sorts by (None: sorts as text, or last when blank)."""

    text: str
    value: float | None = None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Run:
    """One run folder as the page shows it. ``per_layer`` maps a metric to its value per layer label: the
    columns of the combined table when several runs of one kind stand side by side."""

    kind: str
    folder: Path
    name: str
    config: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, data URI)
    tables: list[Table] = field(default_factory=list)
    per_layer: dict[str, dict[str, float | None]] = field(default_factory=dict)
    text: str | None = None


def fmt(value: Any) -> Cell:
    """A value as a cell: integers whole, floats to 4 significant digits, None/NaN/Inf as a dash, lists as JSON."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell(MISSING)
    if isinstance(value, bool):
        return Cell(str(value).lower())
    if isinstance(value, int):
        return Cell(str(value), float(value))
    if isinstance(value, float):
        return Cell(f"{value:.4g}", value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value)
        return Cell(text if len(text) <= 120 else text[:117] + "…")
    return Cell(str(value))


def make_table(title: str, rows: list[dict]) -> Table:
    """One row per dict; the columns are the union of their keys, in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return Table(title, columns, [[fmt(row.get(c)) for c in columns] for row in rows])


def flatten(options: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested options as ``(a.b, text)`` pairs."""
    pairs = []
    for key, value in options.items():
        if isinstance(value, dict) and value:
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", fmt(value).text))
    return pairs


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayerwiseError(f"cannot read {path} ({e}): pass a folder written by layerwise") from e


def number(text: str) -> float | str | None:
    """A CSV cell back to a number where it is one; empty → None."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def scalars(d: dict) -> dict:
    """The entries of ``d`` that are not nested (lists of numbers count as nested)."""
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list)) and k != "command"}


def by_layer(values: list, layers: list | None = None) -> dict[str, float | None]:
    return {str(ell): v for ell, v in zip(layers if layers is not None else range(len(values)), values)}


# ---------------------------------------------------------------- kinds


def detect(folder: Path) -> str | None:
    """The command that wrote ``folder`` (``reproduce`` included), or None when nothing here is ours."""
    if (folder / "reproduce.json").is_file():
        return "reproduce"
    for name in ("results.json", "metrics.json"):
        if (folder / name).is_file():
            data = read_json(folder / name)
            if isinstance(data, dict) and data.get("command") in KINDS:
                return data["command"]
    if (folder / "metrics.json").is_file() and (folder / "log.jsonl").is_file():
        return "train"
    if not (folder / "results.json").is_file():
        return None
    r = read_json(folder / "results.json")
    if not isinstance(r, dict):
        return None
    guesses = [("lpft", "recipes" in r), ("connect", "modes" in r and "alphas" in r),
               ("gen-eval", "models" in r and "diversity_convention" in r), ("exit", "models" in r and "policy" in r),
               ("compare", "layers_a" in r), ("analyze", "layers" in r and "cos" in r)]
    return next((kind for kind, hit in guesses if hit), None)


def _analyze(folder: Path, r: dict, run: Run) -> None:
    rows = read_csv(folder / "layers.csv") if (folder / "layers.csv").is_file() else \
        [{"layer": ell, "accuracy": r.get("accuracy", [None] * (ell + 1))[ell]} for ell in r.get("layers", [])]
    run.tables.append(make_table("per layer", rows))
    for key in ("cos_to_last", "cka_linear_to_last", r.get("metric", "accuracy"), "probe_accuracy"):
        if rows and key in rows[0]:
            run.per_layer[key] = {str(row["layer"]): row[key] for row in rows}
    run.config = flatten(r.get("config", {})) + [("n_samples", fmt(r.get("n_samples")).text)]


def _compare(folder: Path, r: dict, run: Run) -> None:
    for side in ("a", "b"):
        ev = r.get(f"evaluation_{side}", {})
        layers = r.get(f"layers_{side}", [])
        rows = [{"layer": ell, **{k: v[i] for k, v in ev.items() if isinstance(v, list)}} for i, ell in enumerate(layers)]
        if rows:
            run.tables.append(make_table(f"model {side}: per layer", rows))
    run.config = flatten(r.get("config", {})) + [("n_samples", fmt(r.get("n_samples")).text)]


def _train(folder: Path, r: dict, run: Run) -> None:
    log = []
    if (folder / "log.jsonl").is_file():
        for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                run.warnings.append("log.jsonl has a line that is not JSON (a run stopped mid-write); it is left out")
    per_layer = {k: v for k, v in r.items() if isinstance(v, list) and v and not isinstance(v[0], (list, dict))}
    if per_layer:
        n = max(len(v) for v in per_layer.values())
        run.tables.append(make_table("per layer, last evaluation",
                                     [{"layer": i, **{k: v[i] if i < len(v) else None for k, v in per_layer.items()}}
                                      for i in range(n)]))
        run.per_layer = {k: by_layer(v) for k, v in per_layer.items()}
    metric = r.get("metric", "accuracy")
    rows = [{**scalars(rec), f"last-layer {metric}": (rec.get(metric) or [None])[-1]} for rec in log]
    if rows:
        run.tables.append(make_table("training log, one row per evaluation", rows))
    meta = read_json(folder / "layerwise.json") if (folder / "layerwise.json").is_file() else {}
    run.config = flatten(meta.get("training", {})) if isinstance(meta, dict) else []


def _exit(folder: Path, r: dict, run: Run) -> None:
    run.config = flatten(scalars(r))
    models = r.get("models", [])
    run.tables.append(make_table("models", [{"model": m.get("name"), **scalars(m),
                                             **{f"calibrated {k}": v for k, v in scalars(m.get("calibration", {})).items()}}
                                            for m in models]))
    for m in models:
        acc = m.get("per_layer_accuracy", [])
        hist = m.get("exit_histogram", [])
        rows = [{"layer": i + 1, "accuracy": a, "exits at τ": hist[i] if i < len(hist) else None,
                 **{k: v[i] for k, v in m.get("per_layer_metrics", {}).items() if k != "accuracy" and i < len(v)}}
                for i, a in enumerate(acc)]
        run.tables.append(make_table(f"{m.get('name')}: per layer", rows))
        run.tables.append(make_table(f"{m.get('name')}: threshold sweep", [scalars(s) for s in m.get("sweep", [])]))
    if models:
        run.per_layer["accuracy"] = by_layer(models[0].get("per_layer_accuracy", []), range(1, 1 + len(
            models[0].get("per_layer_accuracy", []))))


def _gen_eval(folder: Path, r: dict, run: Run) -> None:
    rows = read_csv(folder / "layers.csv") if (folder / "layers.csv").is_file() else []
    run.tables.append(make_table("per layer", rows))
    models = {row.get("model") for row in rows}
    for key in ("accuracy", "perplexity", "coherence", "diversity"):
        if rows and key in rows[0]:
            run.per_layer[key] = {(f"{row['model']} · " if len(models) > 1 else "") + str(row["layer"]): row[key]
                                  for row in rows}
    run.config = flatten(r.get("config", {})) + [("diversity convention", str(r.get("diversity_convention")))]
    if (folder / "samples.txt").is_file():
        run.text = (folder / "samples.txt").read_text(encoding="utf-8", errors="replace")


def _connect(folder: Path, r: dict, run: Run) -> None:
    run.config = flatten({**scalars(r), "alphas": r.get("alphas"), "endpoints": r.get("endpoints", {})})
    for prefix, res in [("", r)] + ([("matched: ", r["matched"])] if isinstance(r.get("matched"), dict) else []):
        for mode, m in res.get("modes", {}).items():
            variants = [(mode, m)] + [(f"{mode}: {k.replace('_', ' ')}", v) for k, v in m.items()
                                      if isinstance(v, dict) and "loss" in v]
            for title, v in variants:
                keys = ("barrier_loss", "barrier_error", "peak_alpha_loss", "peak_alpha_error")
                rows = [{"group": g, **{k: v[k][i] for k in keys if k in v}} for i, g in enumerate(v.get("groups", []))]
                run.tables.append(make_table(f"{prefix}{title}: barriers per group", rows))
                if not prefix and title == "single":
                    run.per_layer["barrier_loss (single)"] = {str(g): v["barrier_loss"][i]
                                                              for i, g in enumerate(v["groups"])}


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
    models = r.get("models", [r])
    run.config = flatten(scalars(models[0])) if models else []
    for m in models:
        rows = [{**scalars(m.get("full", {})), "threshold": "full"}] + [scalars(p) for p in m.get("sweep", [])]
        run.tables.append(make_table(f"{Path(str(m.get('model', ''))).name}: threshold sweep", rows))


COLLECTORS: dict[str, Callable[[Path, dict, Run], None]] = {
    "analyze": _analyze, "compare": _compare, "train": _train, "exit": _exit, "gen-eval": _gen_eval,
    "connect": _connect, "lpft": _lpft, "generate": _token_exit}


def collect_run(folder: Path, kind: str, name: str | None = None) -> Run:
    """The :class:`Run` of a folder of a known (non-reproduce) ``kind``: its collector's tables and config, the
    results' warnings, and every PNG in the folder, embedded."""
    results_file = folder / ("metrics.json" if kind == "train" else "results.json")
    r = read_json(results_file) if results_file.is_file() else {}
    run = Run(kind, folder, name or folder.name)
    COLLECTORS[kind](folder, r if isinstance(r, dict) else {}, run)
    run.warnings = [str(w) for w in r.get("warnings", [])] + run.warnings
    run.tables = [t for t in run.tables if t.rows]
    run.figures = [(p.name, data_uri(p)) for p in sorted(folder.glob("*.png"))]
    return run
