"""Schemas of the JSON files of run folders, as the tool reads them back: each command's ``results.json`` (``train``:
``metrics.json``) as ``layerwise report`` reads it, ``reproduce.json`` and the ``.reproduce/<step>.json`` marks.

Each schema types only the keys a reader uses (containers it iterates, numbers it formats); other keys pass, as a
file keeps whatever its writer recorded. A file of the wrong shape (a list where an object is expected, a string
where a number is) is one ``LayerwiseError`` line naming the file and the key (``layerwise.files.read_json``).
"""

from __future__ import annotations

from typing import Any

from layerwise.schema import Record

Number = float | None  # null: a value that was NaN or undefined
Rows = list[dict[str, Any]]


class Results(Record):
    """What every ``results.json`` may hold: the command that wrote it and its warnings."""

    command: str | None = None
    warnings: list[Any] = []


class AnalyzeResults(Results):
    layers: list[int] = []
    accuracy: list[Number] = []
    metric: str = "accuracy"
    config: dict[str, Any] = {}


class CompareResults(Results):
    layers_a: list[Any] = []
    layers_b: list[Any] = []
    evaluation_a: dict[str, Any] = {}
    evaluation_b: dict[str, Any] = {}
    config: dict[str, Any] = {}


class TrainMetrics(Results):
    metric: str = "accuracy"


class TrainMeta(Record):
    """``layerwise.json`` as the report reads it: only the training options it shows (the whole file is checked
    by ``checkpoints.schemas.SavedMeta`` when a model loads; the report does not import the model packages)."""

    training: dict[str, Any] | None = None


class ExitModel(Record):
    per_layer_accuracy: list[Number] = []
    exit_histogram: list[Any] = []
    per_layer_metrics: dict[str, list[Any]] = {}
    sweep: Rows = []
    calibration: dict[str, Any] = {}


class ExitResults(Results):
    models: list[ExitModel] = []


class GenEvalResults(Results):
    config: dict[str, Any] = {}


class ConnectCurve(Record):
    """One mode's barriers per group (its variants, such as a matched curve, are objects with ``loss``)."""

    groups: list[Any] = []
    barrier_loss: list[Any] = []
    barrier_error: list[Any] = []
    peak_alpha_loss: list[Any] = []
    peak_alpha_error: list[Any] = []
    midpoint_barrier_loss: list[Any] = []  # excess at α = ½ (barrier_*: the maximum over α)
    midpoint_barrier_error: list[Any] = []


class ConnectPart(Record):
    modes: dict[str, ConnectCurve] = {}


class ConnectResults(Results, ConnectPart):
    endpoints: dict[str, Any] = {}
    matched: ConnectPart | None = None


class LayerValues(Record):
    relative: list[Number] = []
    accuracy: list[Number] = []


class LpftRecipe(Record):
    head_norm: dict[str, Any] = {}
    ntk: dict[str, Any] = {}
    feature_change: LayerValues = LayerValues()
    layer_calibration: LayerValues = LayerValues()


class LpftResults(Results):
    options: dict[str, Any] = {}
    recipes: dict[str, LpftRecipe] = {}
    claims: dict[str, Any] = {}


class TokenExitModel(Record):
    full: dict[str, Any] = {}
    sweep: Rows = []


class GenerateResults(Results, TokenExitModel):
    models: list[TokenExitModel] = []


RESULTS: dict[str, type[Results]] = {
    "analyze": AnalyzeResults, "compare": CompareResults, "train": TrainMetrics, "exit": ExitResults,
    "gen-eval": GenEvalResults, "connect": ConnectResults, "lpft": LpftResults, "generate": GenerateResults}


class ReproduceStep(Record):
    folder: str | None = None
    argv: list[Any] | str | None = None
    args: Any = None
    seconds: Number = None


class Verdict(Record):
    """One claim tested in ``reproduce.json``: the measured quantity once per seed, its mean and 95 % interval.

    ``verdict`` is "holds" or "does not hold" only when the interval excludes the opposite sign, otherwise
    "not resolved at this budget"."""

    quantity: str                       # what is measured, e.g. "aligned − standard mean accuracy, layers 1..L−1"
    values: list[Number] = []           # one per seed (or one for a bootstrap over test samples)
    mean: Number = None
    interval: list[Number] | None = None  # [low, high], 95 %
    method: str | None = None           # "t over seeds" | "bootstrap over test samples"
    verdict: str | None = None          # "holds" | "does not hold" | "not resolved at this budget"


class ReproduceFigure(Record):
    """One figure's entry in ``reproduce.json``: its header, steps and the files that make it."""

    steps: list[ReproduceStep] = []
    warnings: list[Any] = []
    shows: list[str] = []
    seeds: int | None = None
    verdicts: list[Verdict] = []


class ReproduceRecord(Record):
    """``reproduce.json``: one entry per figure reproduced into the folder (or, written by hand, one entry)."""

    figures: dict[str, ReproduceFigure] | None = None


class Mark(Record):
    """``.reproduce/<step>.json``: the settings a finished step ran with, and how long it took."""

    settings: dict[str, Any]
    seconds: Number = None
