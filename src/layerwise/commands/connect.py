"""``connect``: layer-wise linear mode connectivity of two models on one data set: loss and error barriers when
groups of layers are interpolated (results.json and figures; the mathematics and the path scoring are
``evaluation.connectivity``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PositiveInt

from layerwise.commands.common import CommandOptions, Folder
from layerwise.parallel import open_folder, rank0
from layerwise.errors import LayerwiseError

OUTPUTS = ("results.json", "excess.png", "barriers.png", "cumulative.png", "matched_excess.png",
           "matched_barriers.png", "matched_cumulative.png")


class ConnectOptions(CommandOptions):
    """The options of ``connect`` (the α grid and the modes are checked by ``evaluation.connectivity``)."""

    model_a: str
    model_b: str  # of A's architecture
    data: str  # labelled, or a corpus for language models
    mode: Annotated[list[str], Field(min_length=1)] = ["single"]  # full | single | cumulative | random
    out: Folder = Path("runs/connect")
    alphas: str | list[float] | None = None  # α grid in [0, 1], a comma list or numbers [11 points, 0 to 1]
    split: str = "test"
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64
    seq_len: PositiveInt = 128  # language models: tokens per evaluation block
    bn_reset: bool = True  # re-estimate BatchNorm statistics at every interpolated point
    bn_split: str = "train"
    bn_limit: PositiveInt = 2000
    match: bool = False  # also permute B's units to A's (weight matching) first
    readout_from_b: bool = False  # A reads out through B's readout (pretrained body vs fine-tuned)
    random_seeds: PositiveInt = 3
    baseline: str = "models"  # the barrier's straight line: the two whole models | each path's own ends
    filter_norm: bool = False  # random mode: filter-normalised directions
    data_dir: Folder | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    overwrite: bool = False


def parse_alphas(alphas: str | list[float] | None) -> list[float]:
    """The α grid: the default of 11 points, or the given numbers (a comma list in a string), checked."""
    from layerwise.evaluation.connectivity import check_alphas, default_alphas

    if alphas is None:
        return default_alphas()
    if isinstance(alphas, str):
        try:
            alphas = [float(a) for a in alphas.split(",") if a.strip()]
        except ValueError as e:
            raise LayerwiseError(f"cannot parse `alphas` {alphas!r} ({e}): pass comma-separated numbers in [0, 1]") \
                from e
    try:
        return check_alphas(alphas)
    except LayerwiseError as e:
        raise LayerwiseError(f"`alphas`: {e}") from None


def same_inputs(a, b) -> None:
    """Both models must read the batches made for A (same modality, image size, tokenizer)."""
    def key(spec):
        tok = spec.tokenizer
        return (spec.modality, spec.image_size, spec.channels, spec.input_dim, type(tok).__name__,
                getattr(tok, "vocab_size", None))

    if key(a.inputs) != key(b.inputs):
        raise LayerwiseError(f"the models read different inputs ({a.inputs.modality} and {b.inputs.modality}, or "
                             "other image sizes or tokenizers): pass two models of one architecture")


def run(options: ConnectOptions) -> dict[str, Any]:
    """Interpolate ``model_a`` and ``model_b`` along every path of ``mode``; write and return the results."""
    o = options
    from layerwise.evaluation.barriers import check_baseline
    from layerwise.evaluation.connectivity import check_modes

    modes = check_modes(list(o.mode))
    grid = parse_alphas(o.alphas)
    check_baseline(o.baseline, grid)
    folder = open_folder(Path(o.out), "connect", overwrite=o.overwrite, outputs=OUTPUTS)
    out = folder.path
    from layerwise.checkpoints import BUILTIN, load_model  # after the checks: a bad option is answered without torch
    from layerwise.data import load_dataset, make_loader, materialize
    from layerwise.device import pick_device
    from layerwise.evaluation.connectivity import check_pair, connect
    from layerwise.report.writers import write_connect
    from layerwise.stack.surgery import batchnorms

    from layerwise.parallel import local_device, rows, shard_list, split_record

    dev = local_device(pick_device(o.device))
    ds = load_dataset(o.data, o.split, limit=o.limit, seed=o.seed, data_dir=o.data_dir)
    classes = ds.num_classes if ds.kind != "corpus" else None
    a, b = (load_model(s, num_classes=classes if s in BUILTIN else None) for s in (o.model_a, o.model_b))
    check_pair(a, b, o.match)
    same_inputs(a, b)
    if (ds.kind == "corpus") != (a.stack.task == "lm"):
        what = "a text corpus" if ds.kind == "corpus" else "labelled examples"
        raise LayerwiseError(f"{o.data} holds {what}, which {a.stack.task} models cannot be scored on: pass "
                             f"{'a text corpus' if a.stack.task == 'lm' else 'a labelled data set'}")
    for bundle, spec in ((a, o.model_a), (b, o.model_b)):
        ds.check_labels(bundle.stack.num_classes, spec)
        bundle.model.to(dev).eval()
    batches = materialize(make_loader(ds, a.inputs, o.batch_size, seq_len=o.seq_len), dev)
    bn_batches = None
    if o.bn_reset and batchnorms(a.model):
        bn_ds = load_dataset(o.data, o.bn_split, limit=o.bn_limit, seed=o.seed, data_dir=o.data_dir)
        bn_batches = materialize(make_loader(bn_ds, a.inputs, o.batch_size, seq_len=o.seq_len), dev)
    results = connect(a, b, batches, modes=modes, alphas=grid, bn_batches=bn_batches, bn_reset=o.bn_reset,
                      match=o.match, readout_from_b=o.readout_from_b, random_seeds=o.random_seeds,
                      filter_normalised=o.filter_norm, seed=o.seed, progress=o.progress, baseline=o.baseline)
    results = {"model_a": o.model_a, "model_b": o.model_b, "data": o.data, "split": o.split, "limit": o.limit,
               "device": str(dev), "alphas": grid, **results,
               **split_record(rows(shard_list(batches)))}  # the batches each process scored (Scorer's shard)
    rank0(write_connect, results, out)  # rank 0 alone writes; every process holds the same results
    rank0(folder.record)
    return results
