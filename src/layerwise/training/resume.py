"""Resuming a training run: its checkpoints under ``OUT/checkpoint`` read into, and written from, the trainer's
model, optimizer, scheduler, gradient scaler and position (the file format is ``checkpointing.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerwise.errors import LayerwiseError
from layerwise.report.serialize import jsonable
from layerwise.training.checkpointing import (
    Position,
    checkpoint_name,
    corrupt,
    latest_checkpoint,
    load_checkpoint,
    write_checkpoint,
)
from layerwise.training.config import RESUME_KEYS, TrainConfig

CHECKPOINTS = "checkpoint"


@dataclass
class Checkpoints:
    """The checkpoints of the run in ``out``: ``restore`` the latest one, ``save`` a new one."""

    root: Path
    accelerator: Any

    def latest(self) -> Path | None:
        return latest_checkpoint(self.root) if self.root.exists() else None

    def restore(self, cfg: TrainConfig, module: torch.nn.Module, optimizer, scheduler,
                scaler) -> tuple[Position, dict[str, Any]] | None:
        """Load the latest checkpoint, if any, into the model, optimizer, scheduler and scaler; return its position
        and RNG state. A checkpoint written with other ``RESUME_KEYS`` options is refused."""
        path = self.latest()
        if path is None:
            return None
        ck = load_checkpoint(path, self.accelerator.process_index)
        state = ck["trainer_state"]
        saved = state["config"]
        changed = [k for k in RESUME_KEYS if k in saved and saved[k] != jsonable(getattr(cfg, k))]
        if changed:
            raise LayerwiseError(f"{path} was written with other {', '.join(f'`{k}`' for k in changed)}: use the "
                                 "same options, or another `out` to start a new run")
        try:
            module.load_state_dict(ck["model"])
        except RuntimeError as e:
            raise LayerwiseError(f"{path}/model.safetensors does not match the model: {str(e).splitlines()[0]}") from e
        try:
            optimizer.load_state_dict(ck["optimizer"]["optimizer"])
            scheduler.load_state_dict(ck["optimizer"]["scheduler"])
            if "scaler" in ck["optimizer"]:
                scaler.load_state_dict(ck["optimizer"]["scaler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise corrupt(path / "optimizer.pt", e) from e
        return Position.model_validate(state["position"]), ck["rng"]  # position checked by load_checkpoint

    def save(self, model, optimizer, scheduler, scaler, pos: Position, cfg: TrainConfig, tag: str) -> Path:
        """Write ``root/step-N-TAG`` (see ``checkpointing.write_checkpoint``)."""
        acc = self.accelerator
        state = acc.get_state_dict(model)  # collective under FSDP: every rank calls it
        return write_checkpoint(
            acc, self.root, checkpoint_name(pos.step, tag), state,
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()},
            {"position": pos.model_dump(), "config": jsonable(cfg.model_dump())})
