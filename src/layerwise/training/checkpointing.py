"""Checkpoints of a training run: written atomically, resumed bitwise, and never touching files the
tool did not write.

Layout: ``OUT/checkpoint/step-NNNNNNNN-TAG/`` holds ``model.safetensors``, ``optimizer.pt`` (optimizer,
scheduler and gradient-scaler state), ``rng-RANK.pt`` (every RNG) and ``trainer_state.json`` (position,
config); ``OUT/checkpoint/latest.json`` names the newest complete one. A checkpoint is written to a
temporary directory renamed into place, then ``latest.json`` is replaced atomically, so a kill at any
moment leaves the previous checkpoint usable. Every ``torch.load`` is ``weights_only=True``: a planted
pickle cannot run code.
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

from layerwise.checkpoints.files import read_tensors
from layerwise.errors import LayerwiseError
from layerwise.report.serialize import atomic_save_tensors, atomic_write_text

CHECKPOINT_NAME = re.compile(r"step-\d{8}-(lp|mid|end)")


def checkpoint_name(step: int, tag: str) -> str:
    """The directory name of the checkpoint after optimizer step ``step`` (tag: lp, mid or end)."""
    return f"step-{step:08d}-{tag}"


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from (python, numpy, torch CPU and CUDA), as tensors and plain values."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                     *np_state[2:]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def corrupt(path: Path, e: Exception) -> LayerwiseError:
    return LayerwiseError(f"checkpoint file {path} is corrupt ({type(e).__name__}): delete {path.parent.parent} "
                          "to start over, or restore the file")


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The directory ``latest.json`` points to, or None when no checkpoint was completed. It must name a
    checkpoint directory of this run (``step-NNNNNNNN-TAG``), never a path elsewhere."""
    pointer = ckpt_root / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise corrupt(pointer, e) from e
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise LayerwiseError(f"{pointer} names {name!r}, not a checkpoint of this run: delete {ckpt_root} to "
                             "start over")
    path = ckpt_root / name
    if not path.is_dir():
        raise LayerwiseError(f"{pointer} points to {path}, which is missing: delete {ckpt_root} to start over")
    return path


def load_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Weights, optimizer/scheduler state, RNG state and position; any unreadable file → LayerwiseError."""
    out: dict[str, Any] = {}
    for name, read in (("model.safetensors", lambda p: read_tensors(p)),
                       ("trainer_state.json", lambda p: json.loads(p.read_text())),
                       ("optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)),
                       (f"rng-{rank}.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        p = path / name
        if not p.exists():
            raise LayerwiseError(f"checkpoint {path} lacks {name}: delete {path.parent} to start over")
        try:
            out[name.split(".")[0].split("-")[0]] = read(p)
        except LayerwiseError:
            raise
        except Exception as e:  # safetensors / pickle / json raise many types on truncated files
            raise corrupt(p, e) from e
    return out


def write_checkpoint(accelerator, root: Path, name: str, model_state: dict[str, torch.Tensor],
                     training_state: dict[str, Any], trainer_state: dict[str, Any]) -> Path:
    """Write ``root/name`` through a temporary directory (every rank its RNG file, the main process the
    rest), point ``latest.json`` at it, and remove the run's older checkpoints (only directories whose
    names this module writes)."""
    acc, rank = accelerator, accelerator.process_index
    tmp = root / f".tmp-{name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
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
            if old.is_dir() and old.name != name and (CHECKPOINT_NAME.fullmatch(old.name)
                                                      or old.name.startswith(".tmp-step-")):
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return root / name
