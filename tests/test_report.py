"""``layerwise report``'s page, read back without a browser: the values of each run's own files are in its tables,
each embedded image is its PNG byte for byte, warnings and configuration are shown, runs of one kind stand side by
side, and nothing in the page points to the network. The folders are written by the real commands on tiny models
(the session fixture ``report_runs`` in conftest.py); the page is parsed with the standard library's HTML parser."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from layerwise.errors import LayerwiseError
from layerwise.report.collect import detect, fmt
from layerwise.report.html import GENERATOR, write_report

KIND = {"analyze_residual": "analyze", "analyze_plain": "analyze", "compare": "compare", "train": "train",
        "exit": "exit", "connect": "connect", "lpft": "lpft", "gen_eval": "gen-eval"}


class Page(HTMLParser):
    """Tables (caption, header, rows of (text, data-value)), images (src, data-file), warnings, text, meta tags."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[dict] = []
        self.warnings: list[str] = []
        self.meta: dict[str, str] = {}
        self._in: list[str] = []
        self._cell: dict | None = None
        self._warning: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"caption": "", "class": a.get("class", ""), "columns": [], "rows": []})
        elif tag == "tr" and self.tables and "tbody" in self._in:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th", "caption"):
            self._cell = {"tag": tag, "text": "", "value": a.get("data-value")}
        elif tag == "img":
            self.images.append(a)
        elif tag == "meta" and "name" in a:
            self.meta[a["name"]] = a.get("content", "")
        elif tag == "ul" and "warnings" in a.get("class", ""):
            self._warning = []
        if tag not in ("img", "meta", "br"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th", "caption") and self._cell is not None:
            t, c = self.tables[-1], self._cell
            if tag == "caption":
                t["caption"] = c["text"].strip()
            elif tag == "th":
                t["columns"].append(c["text"].strip())
            else:
                t["rows"][-1].append((c["text"].strip(), None if c["value"] is None else float(c["value"])))
            self._cell = None
        if tag == "ul" and self._warning is not None:
            self.warnings += self._warning
            self._warning = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        elif self._warning is not None and data.strip():
            self._warning.append(data.strip())

    def table(self, caption: str, nth: int = 0) -> dict:
        return [t for t in self.tables if t["caption"] == caption][nth]

    @staticmethod
    def column(table: dict, name: str) -> list:
        i = table["columns"].index(name)
        return [row[i] for row in table["rows"]]


@pytest.fixture(scope="module")
def page(report_runs):
    runs, path = report_runs
    text = path.read_text(encoding="utf-8")
    return runs, text, Page(text)


def _results(folder: Path, name: str = "results.json") -> dict:
    return json.loads((folder / name).read_text())


def _by_run(p: Page, caption: str) -> list[dict]:
    """The tables with this caption, in the order of the runs given (analyze-residual before analyze-plain)."""
    return [t for t in p.tables if t["caption"] == caption]


def test_each_command_names_itself_and_is_recognised_without_it(report_runs, tmp_path):
    runs, _ = report_runs
    for name, folder in runs.items():
        file = "metrics.json" if KIND[name] == "train" else "results.json"
        assert _results(folder, file)["command"] == KIND[name]
        old = shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("*.png", "checkpoint"))
        saved = _results(old, file)
        del saved["command"]  # a folder written before results named their command
        (old / file).write_text(json.dumps(saved))
        assert detect(old) == KIND[name], name
    (tmp_path / "empty").mkdir()
    assert detect(tmp_path / "empty") is None


def test_per_layer_values_of_each_run_are_in_its_tables(page):
    runs, _, p = page
    residual, plain = _by_run(p, "per layer")[:2]  # analyze runs come first, in the order given
    for table, folder in ((residual, runs["analyze_residual"]), (plain, runs["analyze_plain"])):
        r = _results(folder)
        assert [v for _, v in p.column(table, "layer")] == [float(ell) for ell in r["layers"]]
        assert [v for _, v in p.column(table, "accuracy")] == r["accuracy"]
        assert [v for _, v in p.column(table, "nc1")] == r["nc1"]
        assert [v for _, v in p.column(table, "cos_to_last")] == [row[-1] for row in r["cos"]]
    train = _results(runs["train"], "metrics.json")
    table = p.table("per layer, last evaluation")
    assert [v for _, v in p.column(table, "loss")] == pytest.approx(train["loss"], rel=1e-12)
    log = [json.loads(line) for line in (runs["train"] / "log.jsonl").read_text().splitlines()]
    table = p.table("training log, one row per evaluation")
    assert [v for _, v in p.column(table, "train_loss")] == [rec["train_loss"] for rec in log]
    assert [v for _, v in p.column(table, "last-layer accuracy")] == [rec["accuracy"][-1] for rec in log]
    model = _results(runs["exit"])["models"][0]
    table = p.table("mlp-residual: per layer")
    assert [v for _, v in p.column(table, "accuracy")] == model["per_layer_accuracy"]
    assert [v for _, v in p.column(table, "exits at τ")] == [float(n) for n in model["exit_histogram"]]
    single = _results(runs["connect"])["modes"]["single"]
    table = p.table("single: barriers per group")
    assert [t for t, _ in p.column(table, "group")] == single["groups"]
    assert [v for _, v in p.column(table, "barrier_error")] == single["barrier_error"]
    recipes = _results(runs["lpft"])["recipes"]
    table = p.table("recipes")
    assert [t for t, _ in p.column(table, "recipe")] == list(recipes)
    assert [v for _, v in p.column(table, "accuracy")] == [x["accuracy"] for x in recipes.values()]
    gen = _results(runs["gen_eval"])["models"][0]
    table = p.table("per layer", 3)  # after the two analyze runs' and lpft's
    assert [v for _, v in p.column(table, "perplexity")] == gen["perplexity"]


def test_numbers_are_shown_to_four_digits_and_missing_as_a_dash(page):
    runs, _, p = page
    accuracy = _results(runs["analyze_residual"])["accuracy"]
    shown = [t for t, _ in p.column(_by_run(p, "per layer")[0], "accuracy")]
    assert shown == [f"{a:.4g}" for a in accuracy]
    assert [fmt(x).text for x in (None, float("nan"), float("inf"))] == ["–"] * 3
    assert (fmt(7).text, fmt(True).text, fmt(0.000123456).text) == ("7", "true", "0.0001235")


def test_every_figure_is_embedded_byte_for_byte(page):
    runs, _, p = page
    pngs = {str(f) for folder in runs.values() for f in folder.glob("*.png")}
    files = [img for img in p.images if "data-file" in img]
    assert {img["data-file"] for img in files} == pngs
    prefix = "data:image/png;base64,"
    for img in files:
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):]) == Path(img["data-file"]).read_bytes()
    # and one headline figure per kind, drawn by the report itself, before the kind's own figures
    overlays = [img for img in p.images if "data-overlay" in img]
    assert [img["data-overlay"] for img in overlays] == list(dict.fromkeys(KIND.values()))
    for img in overlays:
        assert base64.b64decode(img["src"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"
    for kind in dict.fromkeys(KIND.values()):
        first = next(i for i, img in enumerate(p.images) if img.get("data-overlay") == kind)
        own = [i for i, img in enumerate(p.images) if "data-file" in img
               and Path(img["data-file"]).parent in [runs[n] for n, k in KIND.items() if k == kind]]
        assert all(first < i for i in own), kind


def test_warnings_and_configuration_are_shown(page):
    runs, _, p = page
    warnings = _results(runs["analyze_plain"])["warnings"]
    assert warnings and any("rsa" in w for w in warnings)  # RSA on 32 of the 64 samples
    assert [w.removeprefix("warning: ") for w in p.warnings] == warnings
    configs = [{row[0][0]: row[1][0] for row in t["rows"]} for t in p.tables if t["columns"] == ["option", "value"]]
    analyze = _results(runs["analyze_plain"])["config"]
    assert {"model": "mlp-plain", "measures": json.dumps(analyze["measures"]), "sample_cap": "32"}.items() \
        <= configs[1].items()
    training = json.loads((runs["train"] / "layerwise.json").read_text())["training"]
    assert any(c.get("lr") == fmt(training["lr"]).text and c.get("objective") == "standard" for c in configs)
    lpft = _results(runs["lpft"])["options"]
    assert any(c.get("ntk_subset") == str(lpft["ntk_subset"]) and c.get("ft_lrs") == "[0.001]" for c in configs)


def test_runs_of_one_kind_stand_side_by_side(page):
    runs, text, p = page
    assert re.search(r'<h2>analyze: 2 runs side by side</h2>\s*<figure class="headline"><img [^>]*'
                     r'data-overlay="analyze">', text)
    differ = p.table("options in which the runs differ")
    assert differ["columns"] == ["option", "analyze-residual", "analyze-plain"]
    configs = [_results(runs[n])["config"] for n in ("analyze_residual", "analyze_plain")]
    assert [t for t, _ in p.column(differ, "option")] == [k for k in configs[0] if configs[0][k] != configs[1][k]]
    table = p.table("cos_to_last, every run")
    assert table["columns"] == ["layer", "analyze-residual", "analyze-plain"]
    for name in ("analyze_residual", "analyze_plain"):
        cos = _results(runs[name])["cos"]
        assert [v for _, v in p.column(table, runs[name].name)] == [row[-1] for row in cos]
    # figures of one name in one row: a figure both runs drew is followed at once by the other run's
    files = [img["data-file"] for img in p.images if "data-file" in img]
    shared = {f.name for f in runs["analyze_residual"].glob("*.png")} & {f.name for f in runs["analyze_plain"].glob("*.png")}
    assert "heatmap_cos.png" in shared and "heatmap_rsa.png" not in shared
    for name in shared:
        i = files.index(str(runs["analyze_residual"] / name))
        assert files[i + 1] == str(runs["analyze_plain"] / name)


def test_page_is_self_contained(page):
    _, text, p = page
    assert not re.search(r"https?://", text)
    assert p.meta["generator"] == GENERATOR
    assert not re.search(r"<(link|iframe|object|embed)\b|<script[^>]*\bsrc=", text)


def test_reproduce_folder_shows_its_figure_then_each_step(report_runs, tmp_path):
    runs, _ = report_runs
    fig = tmp_path / "fig1"
    for step in ("standard", "aligned"):
        shutil.copytree(runs["analyze_residual"], fig / step)
    spec = {"figure": "1", "title": "COS to the last layer", "claim": "aligned <models> converge earlier",
            "budget": "cpu", "data_note": "digits stands in for CIFAR-10", "expected_minutes": 3,
            "steps": [{"name": n, "command": "analyze", "args": ["--model", n], "folder": n}
                      for n in ("standard", "aligned", "never-ran")]}
    (fig / "reproduce.json").write_text(json.dumps(spec))
    text = write_report([fig], tmp_path / "report.html").read_text()
    p = Page(text)
    assert "<h2>Figure 1: COS to the last layer</h2>" in text and "<title>COS to the last layer</title>" in text
    assert "aligned &lt;models&gt; converge earlier" in text  # autoescaped
    assert "digits stands in for CIFAR-10" in text and "<dd>cpu</dd>" in text
    assert [h for h in re.findall(r"<h3>(Step [^<]*)</h3>", text)] == \
        ["Step 1: standard", "Step 2: aligned", "Step 3: never-ran"]
    assert "<code>layerwise analyze --model aligned</code>" in text and "not run yet" in text
    files = [img for img in p.images if "data-file" in img]
    assert len(_by_run(p, "per layer")) == 2 and len(files) == 2 * len(list(runs["analyze_residual"].glob("*.png")))
    # the two analyze steps in one plot, once, and not again in each step's section
    assert [img["data-overlay"] for img in p.images if "data-overlay" in img] == ["analyze"]
    assert text.index('data-overlay="analyze"') < text.index("<h3>Step 1")
    assert any({r[0][0]: r[1][0] for r in t["rows"]}.get("expected_minutes") == "3" for t in p.tables)


def test_write_report_refuses_foreign_files_and_rewrites_its_own(report_runs, tmp_path):
    runs, _ = report_runs
    out = tmp_path / "report.html"
    write_report([runs["exit"]], out, title="first")
    write_report([runs["exit"]], out, title="second")  # a page of ours is replaced
    assert "<title>second</title>" in out.read_text()
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    with pytest.raises(LayerwiseError, match="was not written by layerwise report"):
        write_report([runs["exit"]], foreign)
    assert foreign.read_text() == "<html>my notes</html>"
    with pytest.raises(LayerwiseError, match="is a folder"):
        write_report([runs["exit"]], tmp_path)
    with pytest.raises(LayerwiseError, match="holds no layerwise run"):
        write_report([tmp_path], tmp_path / "other.html")
    assert not (tmp_path / "other.html").exists()


def test_token_exit_sweep_is_a_run_of_its_own(tmp_path):
    """``generate --early-exit --sweep`` names itself, and the page tables its full decoding and thresholds."""
    import subprocess
    import sys

    out = tmp_path / "sweep"
    subprocess.run([sys.executable, "-m", "layerwise.cli", "generate", "--model", "gpt-tiny", "--early-exit",
                    "--sweep", "0.3,0.9", "--prompt", "the cat", "--max-new-tokens", "4", "--out", str(out)],
                   check=True, capture_output=True)
    assert detect(out) == "generate"
    p = Page(write_report([out], tmp_path / "r.html").read_text())
    r = _results(out)
    table = p.table("gpt-tiny: threshold sweep")
    assert [t for t, _ in p.column(table, "threshold")] == ["full", "0.3", "0.9"]
    assert [v for _, v in p.column(table, "mean_exit_layer")] == [r["full"]["mean_exit_layer"]] + [
        s["mean_exit_layer"] for s in r["sweep"]]
