"""``lpft``: FT, LP and LP-FT from the same pretrained model, data and budget, and the diagnostics of
Tomihari & Sato (NeurIPS 2024) for each: head norm along training, feature change per layer, the eNTK's two
parts at the start of fine-tuning, calibration before and after temperature scaling, accuracy in distribution
and under shift.

- FT: the model with a fresh head (seeded), fine-tuned with the fine-tuning objective, one run per learning rate
  of the FT grid; LP: the linear probe only (``Trainer`` objective ``lp``); LP-FT: the probe, then fine-tuning,
  one run per learning rate of the LP-FT grid. FT and LP-FT share epochs, batch size and data. Each grid's
  learning rate is chosen by last-layer accuracy on the validation split.
- Every run is a ``Trainer`` run folder under ``out`` (``lp/run``, ``ft/lr-<lr>``, ``lpft/lr-<lr>``), so it
  checkpoints and resumes on its own; a repeated command redoes only the diagnostics.
- The eNTK of FT is taken at its fresh head, the one of LP-FT at the probe's head (LP's final model, which is
  LP-FT's start); LP trains no backbone, and its entry is LP-FT's start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor

from layerwise.checkpoints import ModelBundle, load_model
from layerwise.commands.common import CommandOptions, Folder, LogWith
from layerwise.data import LayerwiseDataset, load_dataset, make_loader, materialize
from layerwise.data.batches import Batch, labels_of
from layerwise.data.load import holdout
from layerwise.errors import LayerwiseError
from layerwise.evaluation.calibration import calibration, layer_calibration, temperature_scaling
from layerwise.evaluation.lpft import check_classifier, check_ntk_memory, feature_change, head_norms, ntk_at_start
from layerwise.evaluation.per_layer import gathered_layer_logits
from layerwise.report.serialize import atomic_write_text, jsonable
from layerwise.parallel import local_device, open_folder, rank0, rows, shard_list, split_record
from layerwise.run_folder import check_run_folder
from layerwise.schema import Finite
from layerwise.stack import LayerStack
from layerwise.training import objectives as O
from layerwise.training.config import FtObjectiveName, resolve_config
from layerwise.training.probe import readout_linear
from layerwise.training.log import append_log, read_log, tracker_names
from layerwise.training.setup import build_bundle
from layerwise.training.trainer import Trainer

Positive = Annotated[int, Field(gt=0)]
LearningRates = Annotated[list[Annotated[Finite, Field(gt=0)]], Field(min_length=1)]
RECIPES = ("ft", "lp", "lpft")
OUTPUTS = ("ft", "lp", "lpft", "results.json", "head_norm.png", "feature_change.png", "reliability.png",
           "layer_calibration.png")


class LpftOptions(CommandOptions):
    """The options of ``lpft``."""

    model: str = "minilm"
    data: str = "sst2"
    out: Folder = Path("runs/lpft")
    split: str = "test"  # evaluation split (SST-2: the dev set)
    val_split: str = "0.2"  # a fraction of the training subset held out, or a split name
    limit: Positive | None = None  # training examples before the validation hold-out
    eval_limit: Positive | None = None
    shift_data: str | None = None
    shift_split: str = "test"
    epochs: Positive = 1
    batch_size: Positive = 32
    ft_lrs: LearningRates = Field(default_factory=lambda: [1e-5, 3e-5, 1e-4])
    lpft_lrs: LearningRates = Field(default_factory=lambda: [1e-6, 3e-6, 1e-5])
    ft_objective: FtObjectiveName = "standard"
    weight_decay: Annotated[Finite, Field(ge=0)] = 0.0
    max_length: Positive | None = None
    lp_cv: Annotated[int, Field(ge=2)] = 3
    ntk_subset: Positive = 256
    ntk_chunk: Positive = 4
    ntk_memory: Annotated[Finite, Field(gt=0)] = 4.0  # GiB
    seed: Annotated[int, Field(ge=0)] = 0
    device: str = "auto"
    data_dir: Folder | None = None
    overwrite: bool = False
    progress: bool = True
    log_with: LogWith = None  # experiment trackers of each training run (docs/scaling.md)


def _logits(stack: LayerStack, batches: Sequence[Batch]) -> tuple[Tensor, Tensor]:
    """(L, N, C) readout logits after every layer 1..L, and the (N,) labels (data-parallel under a launcher:
    each process scores its shard, the logits are gathered in data-set order)."""
    return gathered_layer_logits(stack, batches), labels_of(batches)


def evaluate_recipe(bundle: ModelBundle, pre: LayerStack, data: dict[str, LayerwiseDataset | None], *,
                    batch_size: int, device: torch.device, progress: bool = False) -> dict:
    """Accuracy, calibration (before/after a temperature fitted on ``data['val']``), per-layer calibration,
    shift accuracy and feature change per layer for a trained model; ``pre`` is the frozen pretrained stack."""
    stack = bundle.stack.to(device).eval()
    linear = check_classifier(stack, bundle.name)

    def batches(ds: LayerwiseDataset) -> list[Batch]:
        return materialize(make_loader(ds, bundle.inputs, batch_size), device)

    test = batches(data["test"])
    val_logits, val_labels = _logits(stack, batches(data["val"]))
    test_logits, test_labels = _logits(stack, test)
    cal = temperature_scaling(val_logits[-1], val_labels, test_logits[-1], test_labels)
    out = {"head_norm_final": head_norms(linear), "accuracy": cal["before"]["accuracy"],
           "ece": cal["before"]["ece"], "ece_temperature_scaled": cal["after"]["ece"], "calibration": cal,
           "layer_calibration": layer_calibration(val_logits, val_labels, test_logits, test_labels)}
    if data.get("shift") is not None:
        shift_logits, shift_labels = _logits(stack, batches(data["shift"]))
        before = calibration(shift_logits[-1], shift_labels)
        after = calibration(shift_logits[-1], shift_labels, cal["temperature"])
        out["shift"] = {"accuracy": before["accuracy"], "ece": before["ece"], "ece_temperature_scaled": after["ece"],
                        "n": int(shift_labels.numel())}
    out["feature_change"] = feature_change(pre.to(device), stack, test, device=device, progress=progress)
    return {**out, **split_record(rows(shard_list(test)))}  # the test samples each process scored


class HeadNormLog:
    """A ``Trainer.step_hooks`` entry: appends {"step", "frobenius", "rows"} of the head to a JSONL file. On resume,
    records from the checkpoint's step on are dropped first (they are redone)."""

    def __init__(self, path: Path, start_step: int):
        self.path = Path(path)
        keep = [r for r in read_log(self.path) if r.get("step", 0) < start_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), self.path)

    def __call__(self, trainer) -> None:
        if trainer.accelerator.is_main_process:
            append_log(self.path, {"step": trainer.pos.step, **head_norms(readout_linear(trainer.stack))})


def load_data(opts: LpftOptions) -> dict[str, LayerwiseDataset | None]:
    """train / val / test (/ shift) parts, each checked for size and classes before any training."""
    full = load_dataset(opts.data, "train", seed=opts.seed, data_dir=opts.data_dir)
    if full.num_classes is None or full.num_classes < 2:
        raise LayerwiseError(f"{opts.data} has no class labels (a regression or unlabelled set): LP-FT's head norms "
                             "per class, calibration and kernel accuracy need a classification data set")
    if opts.limit is not None and opts.limit > len(full):
        raise LayerwiseError(f"a training subset of {opts.limit} is larger than the {len(full)} training examples "
                             f"of {opts.data}: lower the limit")
    train = load_dataset(opts.data, "train", limit=opts.limit, seed=opts.seed, data_dir=opts.data_dir)
    try:
        fraction = float(opts.val_split)
    except ValueError:
        val = load_dataset(opts.data, opts.val_split, limit=opts.eval_limit, seed=opts.seed, data_dir=opts.data_dir)
    else:
        val, train = holdout(train, fraction, opts.seed)
    test = load_dataset(opts.data, opts.split, limit=opts.eval_limit, seed=opts.seed, data_dir=opts.data_dir)
    shift = None if opts.shift_data is None else load_dataset(
        opts.shift_data, opts.shift_split, limit=opts.eval_limit, seed=opts.seed, data_dir=opts.data_dir)
    if opts.ntk_subset > len(train):
        raise LayerwiseError(f"an NTK subset of {opts.ntk_subset} is larger than the {len(train)} training examples "
                             "left after the validation hold-out: lower the NTK subset or raise the limit")
    return {"train": train, "val": val, "test": test, "shift": shift}


def train_config(opts: LpftOptions, out: Path, objective: str, lr: float):
    """The ``TrainConfig`` of one run: the same data, seed, epochs and batch size for every recipe."""
    return resolve_config(
        model=opts.model, data=opts.data, out=str(out), objective=objective, ft_objective=opts.ft_objective,
        epochs=opts.epochs, batch_size=opts.batch_size, lr=lr, weight_decay=opts.weight_decay, seed=opts.seed,
        limit=opts.limit, max_length=opts.max_length, lp_cv=opts.lp_cv,
        data_dir=str(opts.data_dir) if opts.data_dir is not None else None,
        progress=opts.progress, cpu=opts.device == "cpu", schedule="constant", eval_batch_size=64,
        log_with=opts.log_with)


def run_one(opts: LpftOptions, data: dict, out: Path, objective: str, lr: float) -> dict[str, Any]:
    """One ``Trainer`` run (resumed if its folder holds a checkpoint), logging the head norm along training."""
    trainer = Trainer(train_config(opts, out, objective, lr), train_ds=data["train"], eval_ds=data["val"])
    log = out.parent / f"head_norm-{out.name}.jsonl"
    trainer.step_hooks.append(HeadNormLog(log, trainer.pos.step))
    record = trainer.fit()
    return {"lr": lr, "run": str(out), "val_accuracy": record["accuracy"][-1], "head_norm_log": str(log)}


def fit_recipe(opts: LpftOptions, data: dict, name: str, objective: str, lrs: list[float]) -> dict[str, Any]:
    """Train every learning rate of the grid; the chosen run is the one with the best validation accuracy."""
    runs = [run_one(opts, data, Path(opts.out) / name / f"lr-{lr:g}", objective, lr) for lr in lrs]
    best = max(runs, key=lambda r: r["val_accuracy"])
    trajectory = read_log(Path(best["head_norm_log"]))
    return {"objective": objective, "lr": best["lr"], "run": best["run"], "val_accuracy": best["val_accuracy"],
            "grid": {f"{r['lr']:g}": r["val_accuracy"] for r in runs}, "head_norm_trajectory": trajectory}


def claims(recipes: dict[str, dict]) -> dict[str, Any]:
    """The paper's three claims, read off the results (True/False, with the numbers compared)."""
    ft, lpft = recipes["ft"], recipes["lpft"]

    def change(r: dict) -> float:  # mean relative feature change over the layers
        return sum(r["feature_change"]["relative"]) / len(r["feature_change"]["relative"])

    return {
        "head_norm_lpft_larger": {"holds": lpft["head_norm"]["final"] > ft["head_norm"]["final"],
                                  "ft": ft["head_norm"]["final"], "lpft": lpft["head_norm"]["final"]},
        "feature_change_lpft_smaller": {"holds": change(lpft) < change(ft), "ft_mean": change(ft),
                                        "lpft_mean": change(lpft)},
        "ece_lpft_worse_then_fixed": {"holds": lpft["ece"] > ft["ece"] and lpft["ece_temperature_scaled"] < lpft["ece"],
                                      "ft": [ft["ece"], ft["ece_temperature_scaled"]],
                                      "lpft": [lpft["ece"], lpft["ece_temperature_scaled"]]},
    }


def run(options: LpftOptions) -> dict[str, Any]:
    """Train the three recipes and measure them; write and return the results."""
    from accelerate.utils import set_seed

    from layerwise.device import pick_device
    from layerwise.report.writers import write_lpft

    opts = options
    out = Path(opts.out)
    tracker_names(opts.log_with)  # a missing tracker package is refused before any work
    check_run_folder(out, "lpft", overwrite=opts.overwrite, outputs=OUTPUTS)  # opened below, after the data checks
    device = local_device(pick_device(opts.device))
    data = load_data(opts)  # every check on the data, the model and the NTK before any training
    set_seed(opts.seed)  # as the Trainer does before building the model: the same fresh head as FT's
    start = build_bundle(train_config(opts, out / "ft", "standard", 1.0), data["train"].num_classes)
    check_classifier(start.stack, opts.model)
    for part in ("train", "val", "test", "shift"):
        if data[part] is not None:
            data[part].check_labels(start.stack.num_classes, opts.model)
    ntk_memory = check_ntk_memory(start.stack, opts.ntk_subset, opts.ntk_chunk, opts.ntk_memory)
    ntk_set = data["train"].subset(torch.randperm(len(data["train"]), generator=torch.Generator().manual_seed(
        opts.seed))[:opts.ntk_subset])

    # created only now, so that bad sizes found above leave nothing behind
    folder = open_folder(out, "lpft", overwrite=opts.overwrite, outputs=OUTPUTS)
    lp_run = run_one(opts, data, out / "lp" / "run", "lp", 1.0)
    trained = {"ft": fit_recipe(opts, data, "ft", opts.ft_objective, opts.ft_lrs),
               "lp": {"objective": "lp", "lr": None, "run": lp_run["run"], "val_accuracy": lp_run["val_accuracy"],
                      "head_norm_trajectory": []},
               "lpft": fit_recipe(opts, data, "lpft", "lp-ft", opts.lpft_lrs)}

    ntk_ft = ntk_at_start(start, ntk_set, opts.ntk_chunk, device, opts.progress)
    lp_bundle = load_model(lp_run["run"])
    ntk_lpft = ntk_at_start(lp_bundle, ntk_set, opts.ntk_chunk, device, opts.progress)
    starts = {"ft": head_norms(check_classifier(start.stack, opts.model)),
              "lp": head_norms(check_classifier(lp_bundle.stack, opts.model))}
    starts["lpft"] = starts["lp"]
    pre = start.stack  # the pretrained backbone, never trained (each Trainer builds its own copy)
    recipes = {}
    for name, run in trained.items():
        bundle = load_model(run["run"])
        bundle.inputs = start.inputs  # the tokenizer and length the runs trained with
        diag = evaluate_recipe(bundle, pre, data, batch_size=64, device=device, progress=opts.progress)
        final = diag.pop("head_norm_final")
        split = {k: diag.pop(k) for k in ("world_size", "rank_samples")}
        recipes[name] = {**run, **diag, "ntk": {"ft": ntk_ft, "lp": ntk_lpft, "lpft": ntk_lpft}[name],
                         "head_norm": {"start": starts[name]["frobenius"], "final": final["frobenius"],
                                       "start_rows": starts[name]["rows"], "final_rows": final["rows"]}}
    results = {"model": opts.model, "data": opts.data, "split": opts.split, "shift_data": opts.shift_data,
               "sizes": {k: (len(v) if v is not None else None) for k, v in data.items()},
               "options": jsonable(opts.model_dump(mode="json")), "ntk_memory": ntk_memory, "recipes": recipes}
    results["claims"] = claims(recipes)
    results.update(split)
    rank0(write_lpft, results, out)  # rank 0 alone writes; every process holds the same results
    rank0(folder.record)
    return results
