"""``layerwise report``: one self-contained HTML page for any run folders.

The folders are read by ``report.collect`` (one collector per command) and laid out by the Jinja2 template
``templates/report.html.j2`` (autoescaped): figures embedded as data URIs, CSS and the table-sorting script
inline, so the page needs no network. Runs of one kind stand side by side, one column per run, figures of one
name in one row, with a combined table per shared per-layer metric. Each kind's section opens with its headline
figure (``report.overlays``: one plot across its runs) and the options in which its runs differ; the whole
configuration is collapsed. A ``reproduce`` folder leads with its figure's claim and verdicts (mean, 95 % interval,
seed count), then the figure, then its settings and each step's own section.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from layerwise.errors import LayerwiseError
from layerwise import files
from layerwise.report.collect import Run, Table, data_uri, detect, flatten, fmt, make_table, present, read_json
from layerwise.report.kinds import collect_run
from layerwise.report.schemas import ReproduceFigure, ReproduceRecord
from layerwise.schema import validate
from layerwise.report.serialize import atomic_write_text
from layerwise.run_folder import check_output_file, record_file

GENERATOR = "layerwise report"  # <meta name="generator">: how a page of ours is told from any other file
# What a page of ours starts with, read back from disk before it is overwritten.
_OUR_META = f'<meta name="generator" content="{GENERATOR}">'


@dataclass
class Group:
    """Runs of one kind, side by side: rows of figures and of tables aligned by name, and combined tables."""

    kind: str
    runs: list[Run]
    is_reproduction = False
    headline: str | None = None  # data URI of the overlay across the runs (report.overlays)
    differ: Table | None = None  # the options in which the runs differ: a row per option, a column per run
    shared: int = 0  # how many options every run has alike
    figure_rows: list[tuple[str, list[str | None]]] = field(default_factory=list)
    table_rows: list[tuple[str, list[Table | None]]] = field(default_factory=list)
    combined: list[Table] = field(default_factory=list)


@dataclass
class Step:
    name: str
    command: str
    folder: Path
    group: Group | None
    note: str | None = None


@dataclass
class Reproduction:
    """A ``reproduce`` folder: the figure's header, its other settings, and one section per step."""

    folder: Path
    figure: str
    is_reproduction = True
    title: str
    claim: str
    budget: str
    data_note: str
    config: list[tuple[str, str]]
    warnings: list[str]
    steps: list[Step]
    shows: list[tuple[str, str]]  # (file under the folder, data URI): the files that make the figure
    verdicts: list[dict] = field(default_factory=list)  # reproduce.json's, as ``schemas.Verdict``
    seeds: int | None = None
    overlays: list[tuple[str, str]] = field(default_factory=list)  # (kind, data URI): the steps of a kind, overlaid


def check_folder(folder: Path) -> str:
    """The kind of run in ``folder``; a one-line error when it does not exist or holds no run of ours."""
    folder = Path(folder)
    if not folder.exists():
        raise LayerwiseError(f"{folder} does not exist: pass run folders written by layerwise")
    if not folder.is_dir():
        raise LayerwiseError(f"{folder} is a file, not a folder: pass run folders written by layerwise")
    kind = detect(folder)
    if kind is None:
        raise LayerwiseError(f"{folder} holds no layerwise run (no results.json, metrics.json or reproduce.json "
                             "written by analyze, compare, train, exit, gen-eval, connect, lpft or reproduce)")
    return kind


def check_out_file(out: Path) -> Path:
    """``out`` may be written: a new file, a page of ours (its ``<meta name="generator">``) or a file the manifest
    of its run folder lists; never a folder, a symlink or any other file (``run_folder.check_output_file``)."""
    return check_output_file(out, lambda head: _OUR_META.encode() in head, GENERATOR, "an .html file")


def combined_tables(runs: list[Run]) -> list[Table]:
    """One table per per-layer metric every run has: a row per layer, a column per run."""
    if len(runs) < 2:
        return []
    metrics = [m for m in runs[0].per_layer if all(m in r.per_layer for r in runs[1:])]
    tables = []
    for metric in metrics:
        layers: list[str] = []
        for r in runs:
            layers += [ell for ell in r.per_layer[metric] if ell not in layers]
        rows = [{"layer": int(ell) if ell.isdigit() else ell, **{r.name: r.per_layer[metric].get(ell) for r in runs}}
                for ell in layers]
        tables.append(make_table(f"{metric}, every run", rows))
    return tables


def differing(runs: list[Run]) -> list[str]:
    """The options whose shown value is not the same in every run (absent counts as a value), in order of first
    appearance; none for a single run."""
    if len(runs) < 2:
        return []
    keys = list(dict.fromkeys(k for r in runs for k, _ in r.config))
    return [k for k in keys if len({dict(r.config).get(k) for r in runs}) > 1]


def headline_uri(kind: str, runs: list[Run]) -> str | None:
    """The headline figure of ``runs`` as a data URI, or None when none of them holds its quantities."""
    from layerwise.report.overlays import headline, png_uri  # matplotlib: only once a page is drawn

    fig = headline(kind, runs)
    return None if fig is None else png_uri(fig)


def make_group(kind: str, runs: list[Run], *, overlay: bool = True) -> Group:
    """Runs of one kind side by side; ``overlay``: with the headline figure across them (a reproduction draws
    its own, across its steps)."""
    group = Group(kind, runs, combined=combined_tables(runs))
    group.headline = headline_uri(kind, runs) if overlay else None
    differ = differing(runs)
    if differ:
        values = [dict(r.config) for r in runs]
        group.differ = Table("options in which the runs differ", ["option", *[r.name for r in runs]],
                             [[fmt(k)] + [fmt(v.get(k)) for v in values] for k in differ])
    group.shared = len({k for r in runs for k, _ in r.config} - set(differ))
    for r in runs:  # each run's own table: the options that differ first
        r.config = [p for p in r.config if p[0] in differ] + [p for p in r.config if p[0] not in differ]
    names: list[str] = []
    for r in runs:
        names += [n for n, _ in r.figures if n not in names]
    group.figure_rows = [(n, [dict(r.figures).get(n) for r in runs]) for n in names]
    titles: list[str] = []
    for r in runs:
        titles += [t.title for t in r.tables if t.title not in titles]
    group.table_rows = [(t, [next((x for x in r.tables if x.title == t), None) for r in runs]) for t in titles]
    return group


def unique_names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name, or its whole path where two folders share a name."""
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def _command_line(step: dict) -> str:
    args = step.get("argv") if step.get("argv") is not None else step.get("args") or []
    if isinstance(args, str):
        try:
            args = shlex.split(args)
        except ValueError:  # an unclosed quote: shown as written
            args = [args]
    args = [str(a) for a in args] if isinstance(args, (list, dict)) else [str(args)]
    return shlex.join(["layerwise", str(step.get("command", "?")), *args])


def collect_reproduction(folder: Path) -> list[Reproduction]:
    """A ``reproduce`` folder: one block per figure recorded in reproduce.json (``{"figures": {name: entry}}``,
    or a single entry), each with its header, the files that make the figure, and each step's run."""
    spec = read_json(folder, "reproduce.json", ReproduceRecord)
    if isinstance(spec.get("figures"), dict):
        return [_figure(folder, entry) for entry in spec["figures"].values()]
    validate(ReproduceFigure, spec, str(folder / "reproduce.json"))
    return [_figure(folder, spec)]


def _figure(folder: Path, spec: dict) -> Reproduction:
    """One figure's block. Its step folders and ``shows`` files are confined to ``folder``: one that leads
    outside it (an absolute path, ``..``, a symlink) is left out with a warning line."""
    header = ("figure", "title", "claim", "budget", "data_note", "steps", "warnings", "command", "shows", "seeds",
              "verdicts")
    warnings = [str(w) for w in spec.get("warnings", [])]
    steps = []
    for i, step in enumerate(spec.get("steps", [])):
        sub = folder / (step.get("folder") or f"step-{i + 1}")
        name = str(step.get("name", sub.name))
        try:
            files.inside(folder, step.get("folder") or f"step-{i + 1}")
            kind = detect(sub) if sub.is_dir() else None
            group = None if kind in (None, "reproduce") else make_group(kind, [collect_run(sub, kind, name)],
                                                                         overlay=False)
        except LayerwiseError as e:
            steps.append(Step(name, _command_line(step), sub, None, f"left out: {e}"))
            continue
        note = "not run yet, or stopped before writing results" if group is None else None
        steps.append(Step(name, _command_line(step), sub, group, note))
    shows = []
    for name in spec.get("shows", []):
        if present(folder, name):
            try:
                shows.append((name, data_uri(folder, name)))
            except LayerwiseError as e:
                warnings.append(f"{name} is left out: {e}")
    by_kind: dict[str, list[Run]] = {}
    for s in steps:
        if s.group is not None:
            by_kind.setdefault(s.group.kind, []).extend(s.group.runs)
    overlays = [(kind, uri) for kind, runs in by_kind.items() if (uri := headline_uri(kind, runs)) is not None]
    seeds = spec.get("seeds")
    return Reproduction(folder, str(spec.get("figure", "")), str(spec.get("title", "")), str(spec.get("claim", "")),
                        str(spec.get("budget", "")), str(spec.get("data_note") or ""),
                        flatten({k: v for k, v in spec.items() if k not in header}), warnings, steps, shows,
                        verdicts=[verdict_view(v) for v in spec.get("verdicts") or []],
                        seeds=seeds if isinstance(seeds, int) and not isinstance(seeds, bool) else None,
                        overlays=overlays)


UNRESOLVED = "not resolved at this budget"


def verdict_view(v: dict) -> dict:
    """One verdict of reproduce.json (``schemas.Verdict``, already checked) as the page shows it: the verdict in
    words ("not resolved at this budget" where it is missing), the mean, the 95 % interval, the method and how
    many values (seeds) it rests on."""
    interval = v.get("interval")
    low, high = interval if isinstance(interval, list) and len(interval) == 2 else (None, None)
    verdict = str(v.get("verdict") or UNRESOLVED)
    style = {"holds": "holds", "does not hold": "fails"}.get(verdict, "unresolved")
    return {"quantity": str(v.get("quantity", "")), "verdict": verdict, "style": style,
            "mean": fmt(v.get("mean")).text, "low": fmt(low).text, "high": fmt(high).text,
            "has_interval": low is not None and high is not None,
            "method": str(v.get("method") or ""), "n": len(v.get("values") or [])}


def collect(folders: Sequence[Path]) -> list[Group | Reproduction]:
    """The page's blocks, in the order the folders were given: a reproduction per ``reproduce`` folder, and one
    group per kind of run (placed where its first folder was)."""
    folders = [Path(f) for f in folders]
    kinds = [check_folder(f) for f in folders]  # every folder checked before any is read whole
    blocks: list[Group | Reproduction] = []
    by_kind: dict[str, list[Run]] = {}
    for folder, kind, name in zip(folders, kinds, unique_names(folders)):
        if kind == "reproduce":
            blocks += collect_reproduction(folder)
            continue
        if kind not in by_kind:
            by_kind[kind] = []
            blocks.append(Group(kind, by_kind[kind]))  # a placeholder, filled below
        by_kind[kind].append(collect_run(folder, kind, name))
    return [make_group(b.kind, b.runs) if isinstance(b, Group) else b for b in blocks]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("layerwise.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = fmt
    return env


def render(folders: Sequence[Path], title: str | None = None) -> str:
    """The page for ``folders`` as a string."""
    blocks = collect(folders)
    if title is None:
        figures = [b.title or b.figure for b in blocks if isinstance(b, Reproduction)]
        title = figures[0] if len(figures) == 1 else "layerwise report: " + ", ".join(Path(f).name for f in folders)
    return _environment().get_template("report.html.j2").render(
        title=title, blocks=blocks, generator=GENERATOR, folders=[str(f) for f in folders])


def write_report(folders: Sequence[Path], out: Path, *, title: str | None = None) -> Path:
    """Write the self-contained HTML page of ``folders`` to ``out`` (atomically) and return ``out``.

    Refused, before anything is read whole: a folder that does not exist or holds no layerwise run; an ``out``
    that is a folder, a symlink, or an existing file the tool did not write (``check_out_file``)."""
    if not folders:
        raise LayerwiseError("no run folder given: pass at least one folder written by layerwise")
    out = check_out_file(Path(out))
    for folder in folders:
        check_folder(Path(folder))
    atomic_write_text(render(folders, title), out)
    record_file(out)  # a page written into a run folder (reproduce's report.html) is listed as the tool's
    return out
