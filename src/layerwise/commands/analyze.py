"""``analyze``: similarity matrices, per-layer readout metrics, probe accuracy and NC1, and residual statistics
of one model on one data set, written to ``out`` (results.json, layers.csv, figures).

    from layerwise.commands import analyze
    results = analyze.run(analyze.AnalyzeOptions(model="minilm", data="sentences", out="runs/a"))
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from pydantic import PositiveInt

from layerwise.commands.common import DTYPES, HALF_DTYPES, CommandOptions, DeviceMap, Folder, LogWith, only_with, with_warnings
from layerwise.errors import LayerwiseError
from layerwise.parallel import open_folder, rank0

DEFAULT_MEASURES = "cos,cka_linear,cka_linear_debiased"
OUTPUTS = ("results.json", "layers.csv", "heatmap_*.png", "similarity_vs_last.png", "cos_boxplot.png", "probe_nc1.png",
           "residual.png", "trackers")


class AnalyzeOptions(CommandOptions):
    """The options of ``analyze`` (the flags of ``layerwise analyze``, dashes for underscores)."""

    model: str = "minilm"  # built-in name, model directory, or hub name
    data: str = "sentences"
    out: Folder = Path("runs/analyze")
    split: str = "test"
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64
    pooling: str | None = None  # cls | last | mean (default: the model's own)
    measures: str = DEFAULT_MEASURES  # comma list, or "all"
    sample_cap: PositiveInt = 2000  # max samples for measures that need N×N structure
    data_dir: Folder | None = None
    device: str = "auto"
    seed: int = 0
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    probe: bool = True  # per-layer linear probe and NC1 (needs labels and a training split)
    probe_limit: PositiveInt | None = 1000
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    lens: str = "logit"  # how the per-layer readout metrics read each layer: logit | tuned:DIR
    overwrite: bool = False
    log_with: LogWith = None  # experiment trackers: the per-layer table and the figures (docs/scaling.md)
    device_map: DeviceMap = None  # place the blocks across devices, CPU and disk (docs/scaling.md)
    offload_folder: Folder | None = None  # where a device map's disk offload goes [a temporary folder]


def load(model: str, device, dtype: str, device_map: str | None = None, offload_folder=None):
    """The model on ``device``, cast to ``dtype``: a checkpoint saved in half precision is analysed in float32
    unless asked otherwise, since bf16 features shift the similarities (CKA(1, L) 0.65 against 0.96). With
    ``device_map`` its blocks are placed by the map instead (``checkpoints.dispatch``) and the features come
    to ``device``."""
    import torch

    from layerwise.checkpoints import load_model

    dtype = HALF_DTYPES.get(dtype, dtype)
    if device_map is not None:
        return load_model(model, device_map=device_map, offload_folder=offload_folder, dtype=getattr(torch, dtype))

    bundle = load_model(model)
    bundle.model.to(device=device, dtype=getattr(torch, dtype)).eval()
    return bundle


def check_pooling(pooling: str | None, bundle, model: str) -> None:
    """``pooling`` chooses a token (one of ``POOLINGS``): refused for a model that takes one vector per sample."""
    from layerwise.stack import POOLINGS

    if pooling is not None and pooling not in POOLINGS:
        raise LayerwiseError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}", option="pooling")
    if pooling is not None and bundle.inputs.modality == "vector":
        raise LayerwiseError(f"`pooling` chooses a token, and {model} takes one vector per sample: drop `pooling`",
                             option="pooling")


def check_labels(ds, bundle, model: str) -> None:
    """A classifier's labels must index its classes and a regression head needs real-valued targets, checked
    before any forward pass (encoders take any label)."""
    stack = bundle.stack
    if stack.task in ("classification", "regression") and stack.num_classes:
        ds.check_labels(stack.num_classes, model)


def load_checked(model: str, device, o, ds):
    """``load``, and with a half-precision ``dtype`` (and no device map) the gap of the half-precision features
    and linear CKA to float32 on the first batch (at most 64 samples; ``evaluation.precision``): the model loads
    in float32 and is cast after a float32 copy measured the batch. (model bundle, gap or None); ``o``: AnalyzeOptions or CompareOptions."""
    device_map = getattr(o, "device_map", None)
    if o.dtype not in HALF_DTYPES or device_map is not None:
        return load(model, device, o.dtype, device_map, getattr(o, "offload_folder", None)), None
    import copy

    import torch

    from layerwise.evaluation.capture import model_loader
    from layerwise.evaluation.precision import precision_gap

    from layerwise.stack import LayerStack

    bundle = load(model, device, "float32")
    batch = next(iter(model_loader(bundle, ds, min(o.batch_size, 64))))
    reference = LayerStack(copy.deepcopy(bundle.model))  # float32; a new stack (adapters close over their model)
    dtype = getattr(torch, HALF_DTYPES[o.dtype])
    bundle.model.to(dtype)
    pooling = o.pooling or bundle.stack.feature_pooling
    return bundle, precision_gap(reference, bundle.stack, batch, dtype, pooling, device)


def _probe_data(o: AnalyzeOptions, ds, columns):
    """The training part the probe is fitted on (``probe_limit`` seeded examples of split train; a regression
    task's ridge probe too), or None: no probe asked, unlabelled data, or no training split (then with a
    warning)."""
    from layerwise.data import load_dataset

    if not o.probe or ds.kind == "corpus" or ds.labels is None:
        return None
    if o.split == "train":
        warnings.warn("the probe is fitted on split train and scored on the analysed split, the same data here: "
                      "analyze another split for a held-out probe accuracy", stacklevel=2)
    try:
        return load_dataset(o.data, "train", limit=o.probe_limit, seed=o.seed, data_dir=o.data_dir, columns=columns)
    except LayerwiseError as e:
        warnings.warn(f"probe and NC1 skipped: no training split ({e})", stacklevel=2)
        return None


def run(options: AnalyzeOptions) -> dict:
    """Measure ``options.model`` layer by layer on ``options.data``; write and return the results."""
    o = options
    only_with(o, o.probe, "`probe`", "probe_limit")
    only_with(o, o.device_map is not None, "`device_map`", "offload_folder")
    if o.device_map is not None:
        from layerwise.checkpoints.dispatch import read_device_map

        read_device_map(o.device_map)  # a bad map is refused before any work
    if o.log_with:
        from layerwise.training.log import tracker_names

        tracker_names(o.log_with)  # a missing tracker package is refused before any work
    from layerwise.commands.lens import check_lenses

    check_lenses([o.lens], [o.model])
    folder = open_folder(Path(o.out), "analyze", overwrite=o.overwrite, outputs=OUTPUTS)
    from layerwise.data import Columns, load_dataset  # after the checks: a bad option is answered without torch
    from layerwise.device import pick_device
    from layerwise.parallel import local_device
    from layerwise.evaluation import analyze
    from layerwise.measures import parse_measures
    from layerwise.report import warning_messages
    from layerwise.report.writers import write_analysis

    names, dev = parse_measures(o.measures), local_device(pick_device(o.device))
    columns = Columns(o.text_column, o.text_pair_column, o.label_column)
    ds = load_dataset(o.data, split=o.split, limit=o.limit, seed=o.seed, data_dir=o.data_dir, columns=columns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = _probe_data(o, ds, columns)
    bundle, gap = load_checked(o.model, dev, o, ds)
    check_pooling(o.pooling, bundle, o.model)
    check_labels(ds, bundle, o.model)
    from layerwise.stack import make_lens

    lens = make_lens(o.lens, bundle.stack)
    if train is not None:
        check_labels(train, bundle, o.model)
    results = with_warnings(analyze, bundle, ds, names, batch_size=o.batch_size, pooling=o.pooling,
                            sample_cap=o.sample_cap, seed=o.seed, device=dev,
                            skip_inapplicable=o.measures.strip() == "all", probe_train=train, lens=lens)
    results["warnings"] = warning_messages(caught) + results["warnings"]
    if gap is not None:
        from layerwise.evaluation.precision import precision_message

        results["precision"] = gap
        results["warnings"].append(precision_message(o.dtype, gap))
    results["config"] = dict(model=o.model, data=o.data, split=o.split, limit=o.limit, batch_size=o.batch_size,
                             pooling=o.pooling or bundle.stack.feature_pooling, measures=names,
                             sample_cap=o.sample_cap, device=str(dev), seed=o.seed, task=bundle.stack.task,
                             dtype=o.dtype, probe=train is not None, device_map=o.device_map,
                             probe_limit=o.probe_limit if train is not None else None, lens=o.lens)
    rank0(write_analysis, results, Path(o.out))  # rank 0 alone writes; every process holds the same results
    if o.log_with:
        rank0(log_analysis, o, results)
    rank0(folder.record)
    return results


def log_analysis(o: AnalyzeOptions, results: dict) -> None:
    """``log_with``: layers.csv's rows as scalars named by layer (``analyze/cka_linear_to_last/layer_03``), the
    configuration as hyperparameters, and the figures."""
    from layerwise.report.writers import _matrix_keys, layer_rows
    from layerwise.training.log import log_run

    scalars = {f"analyze/{key}/layer_{row['layer']:02d}": float(value)
               for row in layer_rows(results, _matrix_keys(results)) for key, value in row.items()
               if key != "layer" and isinstance(value, (int, float)) and not isinstance(value, bool)}
    log_run(o.log_with, "analyze", Path(o.out), results["config"], scalars, sorted(Path(o.out).glob("*.png")))
