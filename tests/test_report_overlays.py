"""The report's headline figures and its first screen: each kind's overlay carries, line by line, the values of
each run's own results file (written here by hand, so the expected numbers are the test's, not the reader's);
the exit trade-off is joined in order of its speed-up; the options in which runs differ come first and the rest is
collapsed; a reproduce folder shows its claim, verdicts, interval and seed count before its figure."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from layerwise.report.figures import exit_sweep
from layerwise.report.html import write_report
from layerwise.report.kinds import collect_run
from layerwise.report.overlays import headline

PNG = b"\x89PNG\r\n\x1a\n"


def write(folder: Path, results: dict, name: str = "results.json") -> Path:
    folder.mkdir(parents=True)
    (folder / name).write_text(json.dumps(results))
    return folder


def lines(fig, title: str) -> dict:
    """{legend label: (x, y)} of the panel with this title."""
    ax = next(a for a in fig.axes if a.get_title() == title)
    return {ln.get_label(): (list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata())))
            for ln in ax.get_lines()}


def cos_matrix(last: list[float]) -> list[list[float]]:
    """A symmetric matrix whose last column is ``last`` (the rest is filler: only that column is drawn)."""
    n = len(last)
    m = np.full((n, n), 0.5)
    m[:, -1] = m[-1, :] = last
    return m.tolist()


def analyze_results(model: str, accuracy: list[float], last: list[float], **config) -> dict:
    return {"command": "analyze", "layers": list(range(len(accuracy))), "accuracy": accuracy, "metric": "accuracy",
            "cos": cos_matrix(last), "n_samples": 64,
            "config": {"model": model, "data": "digits", "limit": 64, "seed": 0, **config}}


STANDARD = {"accuracy": [0.10, 0.20, 0.45, 0.70, 0.92], "cos": [0.20, 0.35, 0.55, 0.80, 1.0]}
ALIGNED = {"accuracy": [0.30, 0.60, 0.85, 0.90, 0.91], "cos": [0.70, 0.82, 0.90, 0.97, 1.0]}


@pytest.fixture
def analyze_pair(tmp_path):
    a = write(tmp_path / "standard", analyze_results("vit", STANDARD["accuracy"], STANDARD["cos"],
                                                     objective="standard"))
    b = write(tmp_path / "aligned", analyze_results("vit", ALIGNED["accuracy"], ALIGNED["cos"], objective="aligned",
                                                    seed=1))
    return a, b


def test_analyze_overlay_draws_each_runs_accuracy_and_cos_to_last(analyze_pair):
    runs = [collect_run(f, "analyze") for f in analyze_pair]
    fig = headline("analyze", runs)
    acc = lines(fig, "readout accuracy per layer")
    cos = lines(fig, "COS to the last layer")
    layers = [0.0, 1.0, 2.0, 3.0, 4.0]
    for name, values in (("standard", STANDARD), ("aligned", ALIGNED)):
        assert acc[name] == (layers, values["accuracy"])
        assert cos[name] == (layers, values["cos"])
    # one colour per run, the same in both panels
    colour = {ln.get_label(): ln.get_color() for ax in fig.axes for ln in ax.get_lines()}
    assert len(set(colour.values())) == 2


def test_train_overlay_is_the_last_evaluations_metric_per_layer(tmp_path):
    folders = [write(tmp_path / name, {"command": "train", "metric": "mcc", "mcc": mcc, "accuracy": [0.5] * 3,
                                       "train_loss": 0.3}, "metrics.json")
               for name, mcc in (("standard", [0.0, 0.1, 0.4]), ("aligned", [0.2, 0.35, 0.41]))]
    fig = headline("train", [collect_run(f, "train") for f in folders])
    got = lines(fig, "mcc per layer, last evaluation")
    assert got == {"standard": ([0.0, 1.0, 2.0], [0.0, 0.1, 0.4]), "aligned": ([0.0, 1.0, 2.0], [0.2, 0.35, 0.41])}


def test_compare_overlay_is_model_as_cos_to_model_bs_last_layer(tmp_path):
    last = [0.1, 0.5, 0.9]
    folder = write(tmp_path / "cmp", {"command": "compare", "layers_a": [0, 1, 2], "layers_b": [0, 1, 2],
                                      "cos": cos_matrix(last), "evaluation_a": {"accuracy": [0.2, 0.4, 0.6]},
                                      "evaluation_b": {"accuracy": [0.3, 0.5, 0.7]}})
    fig = headline("compare", [collect_run(folder, "compare")])
    assert lines(fig, "COS to model b's last layer") == {"cmp": ([0.0, 1.0, 2.0], last)}
    assert lines(fig, "readout accuracy per layer") == {"cmp · model a": ([0.0, 1.0, 2.0], [0.2, 0.4, 0.6]),
                                                        "cmp · model b": ([0.0, 1.0, 2.0], [0.3, 0.5, 0.7])}


# a sweep in threshold order whose speed-ups are not monotone (as a measured wall-clock speed-up is not)
SWEEP = [{"threshold": t, "layer_speedup": ls, "wall_speedup": ws, "accuracy": a}
         for t, ls, ws, a in ((0.5, 3.0, 2.1, 0.70), (0.7, 2.2, 2.4, 0.80), (0.8, 2.5, 1.6, 0.78),
                              (0.9, 1.4, 1.3, 0.88), (0.99, 1.0, 0.9, 0.90))]


def test_exit_overlay_is_sorted_by_speed_up_and_keeps_each_point(tmp_path):
    other = [{**p, "accuracy": p["accuracy"] - 0.1} for p in reversed(SWEEP)]
    folders = [write(tmp_path / name, {"command": "exit", "policy": "confidence",
                                       "models": [{"name": "m", "sweep": sweep, "per_layer_accuracy": [0.5]}]})
               for name, sweep in (("standard", SWEEP), ("aligned", other))]
    fig = headline("exit", [collect_run(f, "exit") for f in folders])
    for key in ("layer_speedup", "wall_speedup"):
        got = lines(fig, f"accuracy against {key.replace('_', ' ')}")
        for name, sweep in (("standard", SWEEP), ("aligned", other)):
            x, y = got[name]
            assert x == sorted(p[key] for p in sweep)
            assert sorted(zip(x, y)) == sorted((p[key], p["accuracy"]) for p in sweep)


def test_exit_sweep_figure_of_a_run_is_joined_in_speed_up_order(tmp_path):
    fig = exit_sweep([{"name": "m", "sweep": SWEEP}], tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG
    for ax, key in zip(fig.axes, ("layer_speedup", "wall_speedup")):
        (ln,) = ax.get_lines()
        assert list(ln.get_xdata()) == sorted(p[key] for p in SWEEP)
        assert sorted(zip(ln.get_xdata(), ln.get_ydata())) == sorted((p[key], p["accuracy"]) for p in SWEEP)


def test_token_exit_overlay_is_perplexity_against_mean_exit_layer_sorted(tmp_path):
    sweep = [{"threshold": 0.2, "mean_exit_layer": 1.5, "perplexity": 90.0},
             {"threshold": 0.5, "mean_exit_layer": 3.2, "perplexity": 40.0},
             {"threshold": 0.8, "mean_exit_layer": 2.9, "perplexity": 45.0}]
    folder = write(tmp_path / "tok", {"command": "generate", "model": "gpt", "full": {"perplexity": 30.0},
                                      "sweep": sweep})
    fig = headline("generate", [collect_run(folder, "generate")])
    x, y = lines(fig, "perplexity of the text against the mean exit layer")["tok"]
    assert x == [1.5, 2.9, 3.2] and y == [90.0, 45.0, 40.0]


def test_gen_eval_overlay_has_perplexity_coherence_and_diversity_per_layer(tmp_path):
    model = {"model": "/m/gpt", "layers": [1, 2, 4], "perplexity": [300.0, 90.0, 40.0], "coherence": [0.1, 0.3, 0.5],
             "diversity": [0.2, 0.6, None], "accuracy": [0.1, 0.2, 0.3]}
    folder = write(tmp_path / "gen", {"command": "gen-eval", "diversity_convention": "tokens", "models": [model]})
    fig = headline("gen-eval", [collect_run(folder, "gen-eval")])
    assert lines(fig, "perplexity per generating layer") == {"gen": ([1.0, 2.0, 4.0], model["perplexity"])}
    assert lines(fig, "coherence per generating layer") == {"gen": ([1.0, 2.0, 4.0], model["coherence"])}
    x, y = lines(fig, "diversity per generating layer")["gen"]
    assert y[:2] == [0.2, 0.6] and math.isnan(y[2])  # null: no value, a gap
    ax = next(a for a in fig.axes if a.get_title() == "perplexity per generating layer")
    assert ax.get_yscale() == "log"


def test_connect_overlay_draws_every_barrier_key_per_group_and_the_whole_model(tmp_path):
    groups = ["embed", "block1", "block2", "readout"]
    runs = []
    for name, scale in (("same-init", 0.1), ("different-init", 1.0)):
        single = {"groups": groups, "barrier_loss": [scale * v for v in (0.5, 2.0, 3.0, 1.0)],
                  "midpoint_barrier_loss": [scale * v for v in (0.01, 0.05, 0.08, 0.02)],
                  "barrier_error": [0.0] * 4}
        full = {"groups": ["all"], "barrier_loss": [scale * 1.9], "midpoint_barrier_loss": [scale * 1.5]}
        runs.append(write(tmp_path / name, {"command": "connect", "alphas": [0, 0.5, 1],
                                            "modes": {"full": full, "single": single}}))
    fig = headline("connect", [collect_run(f, "connect") for f in runs])
    for key, values, whole in (("barrier loss", (0.5, 2.0, 3.0, 1.0), 1.9), ("midpoint barrier loss",
                                                                           (0.01, 0.05, 0.08, 0.02), 1.5)):
        title = f"{key} per group (single mode)"
        got = lines(fig, title)
        for name, scale in (("same-init", 0.1), ("different-init", 1.0)):
            assert got[name] == ([0.0, 1.0, 2.0, 3.0], [scale * v for v in values])
            assert got[f"{name}: whole model"][1] == [scale * whole] * 2  # a horizontal line at that level
        ax = next(a for a in fig.axes if a.get_title() == title)
        assert [t.get_text() for t in ax.get_xticklabels()] == groups


def test_lpft_overlay_draws_head_norm_and_feature_change_per_recipe(tmp_path):
    recipes = {"ft": {"head_norm_trajectory": [{"step": 0, "frobenius": 1.0}, {"step": 5, "frobenius": 1.8}],
                      "head_norm": {"final": 1.8}, "feature_change": {"relative": [0.1, 0.3, 0.6]}},
               "lp": {"head_norm_trajectory": [], "head_norm": {"final": 2.5},
                      "feature_change": {"relative": [0.0, 0.0, 0.0]}}}
    folder = write(tmp_path / "lpft", {"command": "lpft", "options": {}, "recipes": recipes})
    fig = headline("lpft", [collect_run(folder, "lpft")])
    norm = lines(fig, "head norm along fine-tuning")
    assert norm["lpft · ft"] == ([0.0, 5.0], [1.0, 1.8])
    assert norm["lpft · lp: no fine-tuning"][1] == [2.5, 2.5]
    change = lines(fig, "feature change per layer")
    assert change == {"lpft · ft": ([0.0, 1.0, 2.0], [0.1, 0.3, 0.6]), "lpft · lp": ([0.0, 1.0, 2.0], [0.0] * 3)}


def test_a_results_file_of_an_odd_shape_draws_no_line_and_no_error(tmp_path):
    # past the schema (which types `accuracy` and `metric`): lists of another length, rows that are no rows
    folder = write(tmp_path / "odd", {"command": "analyze", "layers": [0, 1, 2], "accuracy": [0.5],
                                      "cos": [[1e400], "x", {}]})
    assert headline("analyze", [collect_run(folder, "analyze")]) is None


def _overlay_srcs(text: str) -> dict[str, bytes]:
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="[^"]*" data-overlay="([^"]+)"', text)
    return {kind: base64.b64decode(data) for data, kind in found}


def test_page_opens_each_kind_with_its_overlay_then_the_options_that_differ(analyze_pair, tmp_path):
    text = write_report(list(analyze_pair), tmp_path / "r.html").read_text()
    overlays = _overlay_srcs(text)
    assert list(overlays) == ["analyze"] and overlays["analyze"][:8] == PNG
    section = text[text.index("<h2>analyze"):]
    overlay, differ = section.index("data-overlay="), section.index('<table class="sortable differ">')
    details, runs = section.index('<details class="configuration">'), section.index('<div class="run-name">')
    assert overlay < differ < details < runs
    differ_table = section[differ:section.index("</table>", differ)]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", differ_table)
    assert rows == [("seed", "0", "1"), ("objective", "standard", "aligned")]
    # each run's whole configuration, collapsed, with the options that differ first
    configs = re.findall(r'<table class="config">.*?</table>', section[details:], re.S)
    assert len(configs) == 2
    for config in configs:
        options = re.findall(r"<tr><td>([^<]*)</td>", config)
        assert options[:2] == ["seed", "objective"] and set(options[2:]) == {"model", "data", "limit", "n_samples"}
    assert "2 options differ (listed first), 4 alike" in section


def test_reproduce_folder_leads_with_claim_verdict_interval_and_seeds(analyze_pair, tmp_path):
    fig = tmp_path / "fig1"
    fig.mkdir()
    for folder in analyze_pair:
        folder.rename(fig / folder.name)
    Figure(figsize=(2, 2)).savefig(fig / "curve.png")  # the figure the recipe shows
    verdicts = [{"quantity": "aligned − standard mean accuracy, layers 1..L−1", "values": [0.21, 0.25, 0.19],
                 "mean": 0.2166666667, "interval": [0.1411, 0.2922], "method": "t over seeds", "verdict": "holds"},
                {"quantity": "aligned − standard last-layer accuracy", "values": [0.01, -0.02, 0.0],
                 "mean": -0.0033, "interval": [-0.0413, 0.0347], "method": "t over seeds",
                 "verdict": "not resolved at this budget"}]
    spec = {"figure": "1", "title": "COS to the last layer", "claim": "aligned layers are better readouts",
            "budget": "cpu", "seeds": 3, "shows": ["curve.png"], "verdicts": verdicts,
            "steps": [{"name": n, "command": "analyze", "folder": n} for n in ("standard", "aligned")]}
    (fig / "reproduce.json").write_text(json.dumps(spec))
    text = write_report([fig], tmp_path / "r.html").read_text()
    claim = text.index("aligned layers are better readouts")
    holds = text.index('<span class="word">holds</span>')
    unresolved = text.index('<span class="word">not resolved at this budget</span>')
    seeds = text.index("Seeds: 3")
    first_image = text.index("<img")
    assert claim < holds < unresolved < seeds < first_image
    assert '[<span class="low">0.1411</span>, <span class="high">0.2922</span>] (t over seeds), from 3 values' in text
    assert '<p class="verdict unresolved"><span class="word">not resolved at this budget</span>' in text
    assert '<p class="verdict holds"><span class="word">holds</span>' in text
    assert text.index('data-file="' + str(fig / "curve.png")) < text.index('data-overlay="analyze"')
    # the overlay across the figure's steps, before the steps' own sections
    assert text.index('data-overlay="analyze"') < text.index("<h3>Step 1")
    assert text.count("data-overlay=") == 1


def test_reproduce_folder_without_verdicts_or_interval_says_so(tmp_path):
    fig = tmp_path / "fig"
    fig.mkdir()
    (fig / "reproduce.json").write_text(json.dumps({"figure": "2", "claim": "c", "steps": []}))
    text = write_report([fig], tmp_path / "r.html").read_text()
    assert "no verdict recorded" in text and "Seeds: not recorded" in text
    # one seed, no bootstrap: no interval, and the verdict left open
    one = {"quantity": "q", "values": [0.3], "mean": 0.3, "interval": None, "verdict": None}
    (fig / "reproduce.json").write_text(json.dumps({"figure": "2", "claim": "c", "seeds": 1, "verdicts": [one]}))
    text = write_report([fig], tmp_path / "r.html").read_text()
    assert '<span class="word">not resolved at this budget</span>: q = 0.3, no interval, from 1 value.' in text
    assert "Seeds: 1." in text
