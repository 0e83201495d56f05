"""``log.jsonl``: one JSON record per line, per epoch (and one for the LP stage), of a training run.

Written by the main process only. A resumed run keeps the records of the epochs its checkpoint had completed;
a fresh run starts a fresh log. A kill mid-write leaves a partial last line, which reading drops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.files import read_bytes
from layerwise.report.serialize import atomic_write_text

LOG, METRICS = "log.jsonl", "metrics.json"
PREDICTIONS = "predictions.json"  # the last evaluation's per-sample predictions (classification, regression)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of ``log.jsonl`` ([] when absent). A last line without its newline was cut short by a kill
    and is dropped; any other line that is not a JSON object is an error."""
    if not path.exists():
        return []
    lines = read_bytes(path, "json").decode("utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: "" or the unterminated partial line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise LayerwiseError(f"line {number} of {path} is not a JSON record: delete {path.parent} to start "
                                 "over, or use another `out`")
        records.append(record)
    return records


def append_log(path: Path, record: dict[str, Any]) -> None:
    """One record as one line (a kill mid-write leaves a partial last line, which ``read_log`` drops)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def trim_log(path: Path, epoch: int) -> None:
    """On resume, keep only the records of epochs the checkpoint had completed (the others are redone)."""
    if path.exists():
        keep = [r for r in read_log(path) if r.get("epoch", 0) <= epoch]
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), path)


@dataclass
class TrainLog:
    """The run's ``log.jsonl``; ``writer``: whether this process writes it (the main process)."""

    path: Path
    writer: bool
    accelerator: Any = None  # with trackers (``log_with``), each record also goes to them as scalars
    num_layers: int = 0  # L, to name the per-layer values of a record by layer

    def start(self, resumed_epoch: int | None) -> None:
        """Trim the log to the epochs a resumed checkpoint completed, or remove the log of an earlier fresh run."""
        if not self.writer:
            return
        if resumed_epoch is not None:
            trim_log(self.path, resumed_epoch)
        elif self.path.exists():
            self.path.unlink()

    def append(self, record: dict[str, Any]) -> None:
        if self.writer:
            append_log(self.path, record)
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log(epoch_scalars(record, self.num_layers), step=record.get("epoch", 0))

    def close(self, failed: bool = False) -> None:
        """End the trackers' runs (``end_training``); after a failure without waiting for the other processes,
        which may never get there."""
        acc = self.accelerator
        if acc is None or not acc.trackers:
            return
        if failed:
            for tracker in acc.trackers:
                tracker.finish()
            acc.trackers.clear()
        else:
            acc.end_training()

    def last(self) -> dict[str, Any] | None:
        """The last complete record (None when the log is empty or gone)."""
        records = read_log(self.path)
        return records[-1] if records else None


# -- experiment trackers (Accelerate's): TensorBoard, Weights & Biases, MLflow, trackio

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")  # the names Accelerate's ``log_with`` takes
TRACKER_DIR = "trackers"  # in the run folder: TensorBoard's event files, MLflow's local store, wandb's files
EXTRA = "pip install 'layerwise[trackers]'"


def _available() -> set[str]:
    from accelerate.utils import (is_mlflow_available, is_tensorboard_available, is_trackio_available,
                                  is_wandb_available)

    checks = dict(tensorboard=is_tensorboard_available, wandb=is_wandb_available, mlflow=is_mlflow_available,
                  trackio=is_trackio_available)
    return {name for name, check in checks.items() if check()}


def tracker_names(log_with: str | None) -> list[str]:
    """``log_with`` (one of ``TRACKERS``, a comma list of them, or ``all``: every installed one) as Accelerate's
    tracker names; a tracker whose package is missing is refused here, before any work."""
    if not log_with:
        return []
    names = [n.strip() for n in log_with.split(",") if n.strip()]
    unknown = [n for n in names if n not in (*TRACKERS, "all")]
    if unknown:
        raise LayerwiseError(f"unknown tracker {unknown[0]!r} in `log_with`: use {', '.join(TRACKERS)} or all",
                             option="log_with")
    available = _available()
    if "all" in names:
        if not available:
            raise LayerwiseError(f"`log_with` all: no tracker is installed ({EXTRA})", option="log_with")
        return [n for n in TRACKERS if n in available]
    missing = [n for n in names if n not in available]
    if missing:
        extra = "pip install trackio" if missing[0] == "trackio" else EXTRA
        raise LayerwiseError(f"`log_with` {missing[0]}: the package is not installed ({extra})", option="log_with")
    return list(dict.fromkeys(names))


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as the trackers' hyperparameters: numbers, strings and booleans as they are, anything
    else (None, lists, paths) as its JSON or text (TensorBoard's hparams take no other types)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value) if isinstance(value, (list, dict, type(None))) else str(value)
    return out


def layer_scalars(record: dict[str, Any], num_layers: int, prefix: str = "eval") -> dict[str, float]:
    """A record's numbers as tracker scalars, named by layer: a list of L+1 numbers is layers 0..L (0 = the
    embeddings), one of L numbers layers 1..L (exit heads, exit histograms), ``PREFIX/KEY/layer_LL``; a single
    number is ``PREFIX/KEY``; a mapping nests its keys (``PREFIX/KEY/SUBKEY/…``). Texts, other lists and
    undefined values (None) are left to the run's files."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}/{key}"] = float(value)
        elif isinstance(value, dict):
            out.update(layer_scalars(value, num_layers, f"{prefix}/{key}"))
        elif isinstance(value, list) and len(value) in (num_layers, num_layers + 1) and all(
                v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            first = num_layers + 1 - len(value)
            out.update({f"{prefix}/{key}/layer_{first + i:02d}": float(v) for i, v in enumerate(value)
                        if v is not None})
    return out


def epoch_scalars(record: dict[str, Any], num_layers: int) -> dict[str, float]:
    """One ``log.jsonl`` record as scalars: the training loss and learning rate under ``train/``, the per-layer
    evaluation under ``eval/`` (``eval/accuracy/layer_03``)."""
    train = {k: record[k] for k in ("train_loss", "lr", "elapsed_s") if k in record}
    rest = {k: v for k, v in record.items() if k not in (*train, "epoch", "step", "stage")}
    return {**layer_scalars(train, num_layers, "train"), **layer_scalars(rest, num_layers, "eval")}


def make_tracker_accelerator(names: list[str], out: Path):
    """An Accelerator that only carries trackers (commands without a training loop): device placement and
    mixed precision stay the command's own."""
    from accelerate import Accelerator

    return Accelerator(log_with=names, project_dir=str(Path(out) / TRACKER_DIR))


def init_trackers(accelerator, command: str, out: Path, config: dict[str, Any]) -> None:
    """Start the accelerator's trackers for a run folder: project ``layerwise-COMMAND``, the run named after the
    folder, files under ``OUT/trackers`` (MLflow's too, unless ``MLFLOW_TRACKING_URI`` names a server), and the
    configuration as hyperparameters."""
    import os

    if not accelerator.log_with:
        return
    folder = (Path(out) / TRACKER_DIR).resolve()
    names = {str(t) for t in accelerator.log_with}
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            # the run folder's local file store: the one store mlflow-skinny reads and writes without a database
            # (MLflow 3 keeps it behind this switch); MLFLOW_TRACKING_URI chooses a server or database instead
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((folder / "mlruns").as_uri())
    run = Path(out).resolve().name
    kwargs = {"wandb": {"name": run, "dir": str(folder)}, "mlflow": {"run_name": run}, "trackio": {"name": run}}
    try:
        accelerator.init_trackers(f"layerwise-{command}", config=hyperparameters(config),
                                  init_kwargs={k: v for k, v in kwargs.items() if k in names})
    except Exception as e:  # a tracker that cannot start (no account, no server): one line, not a traceback
        raise LayerwiseError(f"`log_with`: {', '.join(sorted(names))} could not start "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:300]})", option="log_with") from e


def log_figures(accelerator, paths: list[Path], step: int = 0) -> None:
    """The command's figures (PNG files it wrote) in each tracker: TensorBoard images, MLflow and W&B
    artifacts/images named by file."""
    if not accelerator.is_main_process:
        return
    import numpy as np
    from PIL import Image

    for path in paths:
        for name in {str(t) for t in accelerator.log_with}:
            tracker = accelerator.get_tracker(name, unwrap=True)
            if name == "tensorboard":
                with Image.open(path) as im:
                    tracker.add_image(f"figures/{path.stem}", np.asarray(im.convert("RGB")), step, dataformats="HWC")
            elif name == "mlflow":
                import mlflow

                mlflow.log_artifact(str(path), artifact_path="figures")
            elif name == "wandb":
                import wandb

                tracker.log({f"figures/{path.stem}": wandb.Image(str(path))}, step=step)


def log_run(log_with: str | None, command: str, out: Path, config: dict[str, Any], scalars: dict[str, float],
            figures: list[Path]) -> None:
    """A command without a training loop (analyze, exit) logs its per-layer table and its figures once, at
    the end: one run per tracker, the configuration as hyperparameters."""
    names = tracker_names(log_with)
    if not names:
        return
    accelerator = make_tracker_accelerator(names, out)
    init_trackers(accelerator, command, out, config)
    accelerator.log(scalars, step=0)
    log_figures(accelerator, figures)
    accelerator.end_training()
