"""Checkpoints of a training run: written atomically, resumed bitwise, and never touching files the
tool did not write.

Layout: ``OUT/checkpoint/step-NNNNNNNN-TAG/`` holds ``model.safetensors``, ``optimizer.pt`` (optimizer,
scheduler and gradient-scaler state), ``rng-RANK.safetensors`` (every RNG: tensors, and the Python/numpy
scalars as JSON metadata) and ``trainer_state.json`` (position, config); ``OUT/checkpoint/latest.json``
names the newest complete one. A checkpoint is written to a temporary directory renamed into place, then
``latest.json`` is replaced atomically, so a kill at any moment leaves the previous checkpoint usable.

Nothing read from a run folder can run code: RNG state is safetensors + JSON, and the one pickle,
``optimizer.pt``, is read with ``torch.load(weights_only=True)``. ``latest.json`` may only name a
``step-*`` directory inside ``OUT/checkpoint``, and pruning removes only ``step-*`` and ``.tmp-step-*``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import load_file

from layerwise.errors import LayerwiseError
from layerwise.files import check_regular, read_bytes
from layerwise.report.serialize import atomic_save_tensors, atomic_write_text
from layerwise.schema import Options, validate

CHECKPOINT_NAME = re.compile(r"step-\d{8}-(lp|mid|end)")
TEMP_PREFIX = ".tmp-"


class Position(Options):
    """Where the run stands: epochs completed, micro-batches consumed in the current epoch, optimizer steps,
    the running loss of the current epoch, and whether the linear probe of lp / lp-ft is done."""

    epoch: int = Field(0, ge=0)
    batch: int = Field(0, ge=0)
    step: int = Field(0, ge=0)
    loss_sum: float = 0.0
    loss_n: int = Field(0, ge=0)
    lp_done: bool = False


class TrainerState(Options):
    """``trainer_state.json``: the position, and the options the run was started with."""

    position: Position
    config: dict[str, Any]


def checkpoint_name(step: int, tag: str) -> str:
    """The directory name of the checkpoint after optimizer step ``step`` (tag: lp, mid or end)."""
    return f"step-{step:08d}-{tag}"


def is_ours(name: str) -> bool:
    """Whether an entry of ``OUT/checkpoint`` is one this module writes (a checkpoint or its temporary)."""
    return name == "latest.json" or bool(CHECKPOINT_NAME.fullmatch(name.removeprefix(TEMP_PREFIX)))


# ---------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from (python, numpy, torch CPU and CUDA): tensors, and JSON-able lists."""
    version, py_keys, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(), "python_keys": torch.tensor(py_keys, dtype=torch.int64),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)), "python": [version, py_gauss],
        "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 32-bit seed for the draws of optimizer step ``step`` of a run seeded ``seed`` (one ``stream`` per kind of
    draw): numpy's ``SeedSequence([seed, step, stream])``, since torch's CPU generator keeps only the low 32 bits
    of its seed and packing seed·2³² + step would drop the seed."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0])


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only where CUDA is available)."""
    version, py_gauss = state["python"]
    random.setstate((version, tuple(state["python_keys"].tolist()), py_gauss))
    np_name, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, state["numpy_keys"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_rng(path: Path) -> None:
    """``rng_state()`` as one safetensors file: its tensors, and the rest as JSON in the metadata."""
    state = rng_state()
    rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    atomic_save_tensors({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, path,
                        metadata={"state": json.dumps(rest)})


def read_rng(path: Path) -> dict[str, Any]:
    """A file of ``save_rng``, tried on this process's RNGs and the RNGs put back, so that restoring it later
    cannot fail half-way (a damaged file raises here, while the checkpoint is being read)."""
    with safe_open(str(path), framework="pt") as f:
        names = f.keys()
        state = {k: f.get_tensor(k) for k in names}
        state.update(json.loads((f.metadata() or {})["state"]))
    now = rng_state()
    try:
        set_rng_state(state)
    finally:
        set_rng_state(now)
    return state


# ---------------------------------------------------------------- reading


def corrupt(path: Path, e: Exception) -> LayerwiseError:
    """A damaged checkpoint file: start over in a new folder, or restore the file."""
    run = path.parent.parent.parent
    return LayerwiseError(f"checkpoint file {path} is corrupt ({type(e).__name__}): delete {run} to start over, "
                          "use another `out`, or restore the file")


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The directory ``latest.json`` points to, or None when no checkpoint was completed. It must name a
    checkpoint directory of this run (``step-NNNNNNNN-TAG`` inside ``ckpt_root``), never a path elsewhere."""
    pointer = ckpt_root / "latest.json"
    if not pointer.exists():
        return None
    restart = f"delete {ckpt_root.parent} to start over, or use another `out`"
    try:
        name = json.loads(read_bytes(pointer, "mark"))["dir"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise LayerwiseError(f"{pointer} is corrupt ({type(e).__name__}): {restart}") from e
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise LayerwiseError(f"{pointer} names {name!r}, not a checkpoint of this run: {restart}")
    path = ckpt_root / name
    if not path.is_dir():
        raise LayerwiseError(f"{pointer} points to {path}, which is missing: {restart}")
    if not path.resolve().is_relative_to(ckpt_root.resolve()):  # a step-* link leading out of the run
        raise LayerwiseError(f"{path} leads outside {ckpt_root}: {restart}")
    return path


def _read_trainer_state(p: Path) -> dict[str, Any]:
    data = json.loads(read_bytes(p, "mark"))
    validate(TrainerState, data, str(p))
    return data


def _read_optimizer(p: Path) -> dict[str, Any]:
    data = torch.load(p, map_location="cpu", weights_only=True)
    missing = [k for k in ("optimizer", "scheduler") if not isinstance(data, dict) or not isinstance(data.get(k), dict)]
    if missing:
        raise LayerwiseError(f"{p} lacks the {' and '.join(missing)} state")
    return data


# (key in load_checkpoint's result, file name, reader)
READERS = (("model", "model.safetensors", lambda p: load_file(str(p))),
           ("trainer_state", "trainer_state.json", _read_trainer_state),
           ("optimizer", "optimizer.pt", _read_optimizer),
           ("rng", "rng-{rank}.safetensors", read_rng))


def load_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Weights, optimizer/scheduler state, RNG state and position; a missing, incomplete or unreadable file is
    a LayerwiseError saying to start over."""
    out: dict[str, Any] = {}
    restart = f"delete {path.parent.parent} to start over, or use another `out`"
    for key, name, read in READERS:
        p = path / name.format(rank=rank)
        if not p.exists():
            raise LayerwiseError(f"checkpoint {path} lacks {p.name}: {restart}")
        try:
            check_regular(p, "weights")  # a FIFO would block the reader
            out[key] = read(p)
        except LayerwiseError as e:
            raise LayerwiseError(f"incomplete checkpoint ({e}): {restart}") from e
        except Exception as e:  # safetensors / pickle / json raise many types on truncated or foreign files
            raise corrupt(p, e) from e
    return out


# ---------------------------------------------------------------- writing


def write_checkpoint(accelerator, root: Path, name: str, model_state: dict[str, torch.Tensor],
                     training_state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
    """Write ``root/name`` through a temporary directory (every rank its RNG file, the main process the
    rest), point ``latest.json`` at it, and remove the run's older checkpoints (only directories whose
    names this module writes)."""
    acc, rank = accelerator, accelerator.process_index
    tmp = root / f"{TEMP_PREFIX}{name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    save_rng(tmp / f"rng-{rank}.safetensors")
    if acc.is_main_process:
        atomic_save_tensors(model_state, tmp / "model.safetensors")
        torch.save(training_state, tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(root / name, ignore_errors=True)
        os.replace(tmp, root / name)
        atomic_write_text(json.dumps({"dir": name, "step": trainer_state["position"]["step"],
                                      "epoch": trainer_state["position"]["epoch"]}), root / "latest.json")
        for old in root.iterdir():  # keep only the newest complete checkpoint; leave anything else alone
            if old.is_dir() and old.name != name and is_ours(old.name):
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return root / name
