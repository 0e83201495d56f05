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

from layerwise import files
from layerwise.errors import LayerwiseError
from layerwise.report.schemas import RESULTS, Results, TrainMeta
from layerwise.schema import Record

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


def data_uri(folder: Path, name: str | Path) -> str:
    """The PNG ``folder/name`` as a data URI: confined to ``folder``, a regular file, PNG by its header, capped."""
    return "data:image/png;base64," + base64.b64encode(files.read_png(files.inside(folder, name))).decode("ascii")


def present(folder: Path, name: str) -> bool:
    """Whether ``folder/name`` is there at all (a dangling or outward symlink, a FIFO: yes, to be refused)."""
    path = folder / name
    try:
        return path.is_symlink() or path.exists()
    except ValueError:  # a NUL byte in a name read from a JSON file: there, to be refused
        return True


def read_json(folder: Path, name: str, schema: type[Record] | None = None) -> Any:
    """The JSON file ``folder/name``, confined to ``folder`` and checked against ``schema``."""
    return files.read_json(files.inside(folder, name), schema)


def optional(run: Run, name: str, read: Callable[[], Any]) -> Any:
    """``read()``, or None with one warning line on the page when the file is refused (it is left out)."""
    if not present(run.folder, name):
        return None
    try:
        return read()
    except LayerwiseError as e:
        run.warnings.append(f"{name} is left out: {e}")
        return None


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


def read_csv(folder: Path, name: str) -> list[dict]:
    """The rows of the CSV ``folder/name`` (cells back to numbers), confined to ``folder``; fields beyond the
    header are dropped."""
    path = files.inside(folder, name)
    reader = csv.reader(files.read_text(path, "table").split("\n"))
    header = None
    rows = []
    with files.csv_fields(files.LIMITS["table"]):
        try:
            for fields in reader:
                if header is None:
                    header = fields
                elif fields:
                    rows.append({k: number(v) for k, v in zip(header, fields)})
        except csv.Error as e:
            raise LayerwiseError(f"{path} is not CSV ({e}): pass a folder written by layerwise") from None
    return rows


def at(values: Any, i: int) -> Any:
    """``values[i]``, or None where ``values`` is no list or too short (a per-layer list of another length)."""
    return values[i] if isinstance(values, list) and 0 <= i < len(values) else None


def scalars(d: dict) -> dict:
    """The entries of ``d`` that are not nested (lists of numbers count as nested)."""
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list)) and k != "command"}


def by_layer(values: list, layers: list | None = None) -> dict[str, float | None]:
    return {str(ell): v for ell, v in zip(layers if layers is not None else range(len(values)), values)}


# ---------------------------------------------------------------- kinds


def detect(folder: Path) -> str | None:
    """The command that wrote ``folder`` (``reproduce`` included), or None when nothing here is ours."""
    if present(folder, "reproduce.json"):
        return "reproduce"
    names = ("results.json", "metrics.json")
    read = {name: read_json(folder, name, Results) for name in names if present(folder, name)}
    for data in read.values():
        if data.get("command") in KINDS:
            return data["command"]
    if "metrics.json" in read and present(folder, "log.jsonl"):
        return "train"
    if "results.json" not in read:
        return None
    r = read["results.json"]
    guesses = [("lpft", "recipes" in r), ("connect", "modes" in r and "alphas" in r),
               ("gen-eval", "models" in r and "diversity_convention" in r), ("exit", "models" in r and "policy" in r),
               ("compare", "layers_a" in r), ("analyze", "layers" in r and "cos" in r)]
    return next((kind for kind, hit in guesses if hit), None)


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
    run = Run(kind, folder, name or folder.name)
    COLLECTORS[kind](folder, r, run)
    run.warnings = [str(w) for w in r.get("warnings", [])] + run.warnings
    run.tables = [t for t in run.tables if t.rows]
    for path in sorted(folder.glob("*.png")):
        uri = optional(run, path.name, lambda: data_uri(folder, path.name))  # noqa: B023 (called at once)
        if uri is not None:
            run.figures.append((path.name, uri))
    return run
