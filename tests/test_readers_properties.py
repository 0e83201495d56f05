"""Property-based tests of every reader (issue 25): tables, corpora, run folders as the report reads them,
``reproduce.json`` and its marks, recipes, the training YAML config and ``tokenizer.json``.

Random bytes, truncations, wrong shapes and huge values must end in a result or in a ``LayerwiseError`` with a
one-line message: never another exception, a hang or unbounded memory. Fixed seed (``derandomize``) and a
bounded number of examples, so the module runs in well under a minute.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from layerwise.data import load_dataset, load_table
from layerwise.errors import LayerwiseError
from layerwise.report.collect import KINDS
from layerwise.report.html import render
from layerwise.report.schemas import RESULTS, ReproduceFigure
from layerwise.reproduce.recipe import Recipe, Step, read_recipe
from layerwise.reproduce.runner import finished
from layerwise.training import resolve_config
from layerwise.training.config import KEYS

FEW = settings(derandomize=True, max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

huge_ints = st.integers(min_value=-(10**40), max_value=10**40) | st.sampled_from([10**29, 10**9, -1, 0, 1, 2])
scalars = (st.none() | st.booleans() | huge_ints | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)


def outcome(read: Callable[[], Any]) -> None:
    """``read()`` succeeds, or fails with one LayerwiseError line; any other exception fails the test."""
    try:
        read()
    except LayerwiseError as e:
        message = str(e)
        assert message and "\n" not in message, message


def near(keys: list[str]) -> st.SearchStrategy[Any]:
    """Values close to what a reader expects: numbers, per-layer lists of any length, objects whose keys are the
    ones readers look for, nested; any JSON value now and then."""
    numbers = st.none() | huge_ints | st.floats(allow_nan=True, allow_infinity=True)
    paths = st.sampled_from(["../secret.png", "/etc/passwd", "a\x00b", "step-1", "a.png", ".", ""])
    leaves = numbers | st.text(max_size=6) | paths | st.lists(numbers | st.text(max_size=3) | paths, max_size=4)
    names = st.sampled_from([*keys, "loss", "name", "model", "layer", "start", "final", "relative", "accuracy"])
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4),
                        max_leaves=20) | json_values


def shapes(keys: list[str]) -> st.SearchStrategy[dict]:
    """Objects holding some of ``keys`` (the keys a reader uses) with values of any shape, and other keys."""
    return st.fixed_dictionaries({}, optional={k: near(keys) for k in keys}).flatmap(
        lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=2).map(lambda extra: {**extra, **d}))


def cut(text: str) -> st.SearchStrategy[str]:
    """``text`` truncated anywhere (a file cut short by a kill)."""
    return st.integers(0, len(text)).map(lambda n: text[:n])


# ---------------------------------------------------------------- tables and corpora


@FEW
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".txt"]), content=st.binary(max_size=300))
def test_tables_and_corpora_of_random_bytes(suffix, content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "data" + suffix)
        path.write_bytes(content)
        outcome(lambda: load_dataset(str(path), "all"))


row_values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars,
                                                                                 max_size=2))


@FEW
@given(rows=st.lists(st.fixed_dictionaries({}, optional={k: row_values for k in
                                                          ("text", "sentence", "label", "score", "premise",
                                                           "hypothesis")}), min_size=1, max_size=6),
       suffix=st.sampled_from([".jsonl", ".csv", ".tsv"]), split=st.sampled_from(["all", "train", "test"]))
def test_tables_of_any_shape(rows, suffix, split):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "rows" + suffix)
        if suffix == ".jsonl":
            path.write_text("\n".join(json.dumps(r) for r in rows))
        else:
            sep = "\t" if suffix == ".tsv" else ","
            columns = sorted({k for r in rows for k in r})
            lines = [sep.join(columns)] + [sep.join(str(r.get(c, "")).replace("\n", " ").replace("\r", " ")
                                                    for c in columns) for r in rows]
            path.write_text("\n".join(lines))
        outcome(lambda: load_table(path, split))


# ---------------------------------------------------------------- run folders, as the report reads them


OTHER_KEYS = ["models", "layers", "cos", "modes", "alphas", "recipes", "matched", "diversity_convention", "policy",
              "per_layer_accuracy", "full", "sweep", "metric", "accuracy"]


def mostly(usual: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    """``usual`` nine times in ten, else ``other`` (so a reader gets past its schema most times)."""
    return st.sampled_from([usual] * 9 + [other]).flatmap(lambda s: s)


def typed(annotation: Any, keys: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the type a schema field declares, whose insides are ``near`` anything (so that a reader gets
    past the schema and meets lists of other lengths, missing keys, numbers where it wants objects), or any
    value at all."""
    origin, args = get_origin(annotation), get_args(annotation)
    if depth > 2:
        return near(keys)
    if origin is list:
        inner = typed(args[0], keys, depth + 1) if args else near(keys)
        typed_list = st.lists(inner, min_size=1, max_size=5)
        return mostly(typed_list, near(keys))
    if origin is dict:
        inner = typed(args[1], keys, depth + 1) if len(args) == 2 else near(keys)
        typed_dict = st.dictionaries(st.sampled_from(keys + ["single", "a"]), inner, min_size=1, max_size=3)
        return mostly(typed_dict, near(keys))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = list(annotation.model_fields)
        model = st.fixed_dictionaries({}, optional={k: typed(f.annotation, keys + fields, depth + 1)
                                                    for k, f in annotation.model_fields.items()})
        return mostly(model, near(keys))
    if args:  # a union: any of its members
        return st.one_of([typed(a, keys, depth) for a in args if a is not type(None)] + [st.none()])
    return near(keys)


def results_of(kind: str) -> st.SearchStrategy[dict]:
    schema = RESULTS[kind]
    keys = [*schema.model_fields, *OTHER_KEYS]
    fields = {k: typed(f.annotation, keys) for k, f in schema.model_fields.items()}
    others = {k: near(keys) for k in OTHER_KEYS if k not in fields}
    every_field = st.fixed_dictionaries(fields, optional=others)  # readers meet each key
    some_fields = st.fixed_dictionaries({}, optional=others | fields)  # and its absence
    return (every_field | some_fields).map(lambda d: {**d, "command": kind})


def write_run(folder: Path, kind: str, results: Any, extra: dict[str, str]) -> None:
    folder.mkdir()
    (folder / ("metrics.json" if kind == "train" else "results.json")).write_text(json.dumps(results))
    for name, text in extra.items():
        (folder / name).write_text(text)


extra_files = st.fixed_dictionaries({}, optional={
    "layers.csv": st.text(max_size=80), "log.jsonl": st.text(max_size=80), "layerwise.json": st.text(max_size=40),
    "samples.txt": st.text(max_size=20), "a.png": st.text(max_size=20)})


@pytest.mark.parametrize("kind", KINDS)
@settings(FEW, max_examples=30)
@given(data=st.data(), extra=extra_files)
def test_run_folders_of_any_shape(kind, data, extra):
    results = data.draw(results_of(kind))
    with tempfile.TemporaryDirectory() as tmp:
        write_run(Path(tmp, "run"), kind, results, extra)
        outcome(lambda: render([Path(tmp, "run")]))


@FEW
@given(data=st.data(), kind=st.sampled_from(KINDS), junk=st.binary(max_size=80))
def test_run_folders_truncated_or_random(data, kind, junk):
    text = json.dumps(data.draw(results_of(kind)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "run")
        write_run(folder, kind, {}, {})
        (folder / ("metrics.json" if kind == "train" else "results.json")).write_text(data.draw(cut(text)))
        outcome(lambda: render([folder]))
        (folder / "results.json").write_bytes(junk)
        outcome(lambda: render([folder]))


step_shapes = shapes(["name", "command", "folder", "argv", "args", "seconds"])
figure_shapes = shapes([*ReproduceFigure.model_fields, "figure", "title", "claim", "budget", "data_note"]).flatmap(
    lambda d: st.lists(step_shapes, max_size=3).map(lambda steps: {**d, "steps": steps}) | st.just(d))


@settings(FEW, max_examples=100)
@given(record=st.one_of(json_values, figure_shapes, st.dictionaries(st.text(max_size=4), figure_shapes, max_size=2)
                        .map(lambda f: {"figures": f})), step_run=st.booleans())
def test_reproduce_records_of_any_shape(record, step_run):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "reproduce.json").write_text(json.dumps(record))
        if step_run:
            write_run(folder / "step-1", "analyze", {"command": "analyze", "layers": [0]}, {})
        outcome(lambda: render([folder]))


@FEW
@given(mark=st.one_of(json_values, shapes(["settings", "seconds", "finished"])), truncate=st.booleans(),
       data=st.data())
def test_reproduce_marks_of_any_shape(mark, truncate, data):
    text = json.dumps(mark)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ".reproduce").mkdir()
        (Path(tmp) / ".reproduce" / "a.json").write_text(data.draw(cut(text)) if truncate else text)
        outcome(lambda: finished(Path(tmp), Step(name="a", command="analyze"), "cpu"))


# ---------------------------------------------------------------- recipes and the training config


yaml_values = st.recursive(st.none() | st.booleans() | huge_ints | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)


@FEW
@given(content=st.one_of(shapes(list(Recipe.model_fields)).map(lambda d: yaml.safe_dump(d)),
                         yaml_values.map(lambda v: yaml.safe_dump(v)), st.text(max_size=120)),
       truncate=st.booleans(), data=st.data())
def test_recipes_of_any_shape(content, truncate, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "figure.yaml")
        path.write_text(data.draw(cut(content)) if truncate else content)
        outcome(lambda: read_recipe(path))


@FEW
@given(content=st.one_of(st.fixed_dictionaries({}, optional={k: yaml_values for k in sorted(KEYS)})
                         .map(lambda d: yaml.safe_dump(d)), st.text(max_size=120), st.binary(max_size=120)))
def test_training_configs_of_any_shape(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.yaml")
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        outcome(lambda: resolve_config(config_file=path))


# ---------------------------------------------------------------- tokenizer.json


@settings(derandomize=True, max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(json_values, shapes(["model", "added_tokens", "version", "normalizer"]),
                         st.fixed_dictionaries({"model": shapes(["type", "vocab", "merges"]),
                                                "added_tokens": st.lists(shapes(["id", "content"]), max_size=2)})))
def test_tokenizer_files_of_any_shape(content):
    from layerwise.checkpoints.tokenizers import folder_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "tokenizer.json").write_text(json.dumps(content))
        outcome(lambda: folder_tokenizer(Path(tmp)))
