"""``TrainConfig``: every ``layerwise train`` option; packaged presets and ``--config`` YAML hold the same keys.

Precedence: defaults < preset < config file < explicit overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.training import objectives as O

SCHEDULES = ("constant", "cosine", "multistep")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Every ``layerwise train`` option; YAML presets and ``--config`` files hold the same keys."""

    model: str = "vit-digits"
    data: str = "digits"
    out: str = "runs/train"
    objective: str = "standard"
    ft_objective: str = "standard"  # stage-2 objective of lp-ft
    epochs: int = 3
    batch_size: int = 64  # global, per forward pass
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "constant"  # constant | cosine | multistep, after an optional linear warm-up
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    seed: int = 0
    limit: int | None = None
    eval_limit: int | None = None
    eval_split: str = "test"
    augment: bool = False
    layer_weights: Any = "linear"  # linear | uniform | list of L numbers
    cos_beta: float = 1.0
    depth: int | None = None  # override the depth of the project's own models
    max_length: int | None = None  # text models: tokens per example
    seq_len: int = 128  # language models: tokens per block
    lp_cv: int = 3
    checkpoint_every: int = 0  # optimizer steps; 0 = epoch ends only
    resume: bool = False
    data_dir: str | None = None
    num_workers: int = 0
    cpu: bool = False
    progress: bool = True

    def check(self) -> TrainConfig:
        if self.objective not in O.OBJECTIVES:
            raise LayerwiseError(f"unknown objective {self.objective!r}: use one of {', '.join(O.OBJECTIVES)}")
        if self.ft_objective not in O.FT_OBJECTIVES:
            raise LayerwiseError(f"unknown ft_objective {self.ft_objective!r}: use one of {', '.join(O.FT_OBJECTIVES)}")
        if self.schedule not in SCHEDULES:
            raise LayerwiseError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise LayerwiseError(f"unknown mixed precision {self.mixed_precision!r}: use no, bf16 or fp16")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise LayerwiseError(f"{name}={getattr(self, name)} must be positive")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise LayerwiseError(f"lr={self.lr} must be a positive finite number")
        return self

    @property
    def stage2(self) -> str:
        """The objective of gradient training (lp-ft fine-tunes with ``ft_objective``)."""
        return self.ft_objective if self.objective == "lp-ft" else self.objective


KEYS = {f.name for f in fields(TrainConfig)}
# Changing these between a checkpoint and its resumption would silently break the run.
RESUME_KEYS = ("model", "data", "objective", "ft_objective", "batch_size", "grad_accum", "seed", "limit", "depth",
                "augment", "lr", "schedule", "milestones", "warmup_steps", "layer_weights")


def load_preset(name: str) -> dict[str, Any]:
    """A packaged preset (``layerwise/training/presets/NAME.yaml``) as a dict of TrainConfig keys."""
    path = resources.files("layerwise.training").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name[:-5] for p in resources.files("layerwise.training").joinpath("presets").iterdir()
                       if p.name.endswith(".yaml"))
        raise LayerwiseError(f"unknown preset {name!r}: use one of {', '.join(known)}")
    return _read_yaml(path.read_text(), f"preset {name}")


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise LayerwiseError(f"{source} is not valid YAML ({str(e).splitlines()[0]}): fix the file") from e
    if not isinstance(data, dict):
        raise LayerwiseError(f"{source} must be a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise LayerwiseError(f"{source} has unknown keys {', '.join(unknown)}: valid keys are {', '.join(sorted(KEYS))}")
    return data


def resolve_config(preset: str | None = None, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults < preset < config file < explicit overrides (``None`` overrides are ignored)."""
    merged: dict[str, Any] = {}
    if preset:
        merged.update(load_preset(preset))
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise LayerwiseError(f"config file {path} not found: pass an existing YAML file")
        merged.update(_read_yaml(path.read_text(), str(path)))
    merged.update({k.replace("-", "_"): v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(merged) - KEYS)
    if unknown:
        raise LayerwiseError(f"unknown options {', '.join(unknown)}")
    return TrainConfig(**merged).check()
