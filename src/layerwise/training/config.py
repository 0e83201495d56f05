"""``TrainConfig``: every ``layerwise train`` option, one typed schema for flags, presets and ``--config`` YAML.

Precedence: defaults < preset < config file < explicit overrides; the merged options are validated once
(``layerwise.schema``), so a bad value in any source is one ``LayerwiseError`` line naming the key.
"""

from __future__ import annotations

import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from layerwise.data.tables import Columns
from layerwise.errors import LayerwiseError
from layerwise.files import read_text
from layerwise.schema import Finite, Options, validate
from layerwise.training import objectives as O

Schedule = Literal["constant", "cosine", "multistep"]  # after an optional linear warm-up
MixedPrecision = Literal["no", "bf16", "fp16"]
LMLoss = Literal[O.LM_LOSSES]
ReadoutPooling = Literal["mean", "cls", "last"]

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveFinite = Annotated[Finite, Field(gt=0)]
NonNegativeFinite = Annotated[Finite, Field(ge=0)]
# A name or a path: pathlib paths from Python callers are taken as their text.
PathText = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]


def _objective(value: str) -> str:
    """A registered objective (``objectives.OBJECTIVES``, read when validating: later registrations count)."""
    if value not in O.OBJECTIVES:
        raise ValueError(f"use one of {', '.join(O.OBJECTIVES)}")
    return value


def _ft_objective(value: str) -> str:
    """A registered objective with gradient steps of its own (``objectives.fine_tuning_objectives``)."""
    if value not in O.fine_tuning_objectives():
        raise ValueError(f"use one of {', '.join(O.fine_tuning_objectives())}")
    return value


ObjectiveName = Annotated[str, AfterValidator(_objective)]
FtObjectiveName = Annotated[str, AfterValidator(_ft_objective)]


def _layer_weights(value: Any) -> str | list[float]:
    """``linear``, ``uniform`` or a list of non-negative numbers (their count is checked against the model)."""
    if value in ("linear", "uniform"):
        return value
    numbers = isinstance(value, list) and value and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in value)
    if not numbers:
        raise ValueError("use linear, uniform or a list of one non-negative number per layer")
    return [float(w) for w in value]


class TrainConfig(Options):
    """Every ``layerwise train`` option; YAML presets and ``--config`` files hold the same keys."""

    model: PathText = "vit-digits"
    data: PathText = "digits"
    out: PathText = "runs/train"
    objective: ObjectiveName = "standard"
    ft_objective: FtObjectiveName = "standard"  # stage-2 objective of lp-ft
    epochs: NonNegative = 3  # 0 is meaningful for lp / lp-ft (the probe only)
    batch_size: Positive = 64  # global, per forward pass
    eval_batch_size: Positive | None = None
    lr: PositiveFinite = 1e-3
    weight_decay: NonNegativeFinite = 1e-4
    schedule: Schedule = "constant"
    warmup_steps: NonNegative = 0
    milestones: list[Positive] = Field(default_factory=list)  # epochs, for multistep
    gamma: PositiveFinite = 0.1
    grad_accum: Positive = 1
    max_grad_norm: PositiveFinite | None = None
    mixed_precision: MixedPrecision = "no"  # fp16 needs a CUDA device (checked by the trainer)
    seed: NonNegative = 0  # numpy refuses negative seeds; seeds the initial weights, the --limit subsets and dropout
    data_seed: NonNegative | None = None  # seeds the training data order and augmentation; None = seed
    limit: Positive | None = None
    eval_limit: Positive | None = None
    eval_split: str = "test"
    train_split: str = "train"  # e.g. wikitext2 has no train split here: train on valid
    augment: bool = False
    layer_weights: Annotated[Any, AfterValidator(_layer_weights)] = "linear"
    cos_beta: NonNegativeFinite = 1.0
    depth: Positive | None = None  # override the depth of the project's own models
    max_length: Positive | None = None  # text models: tokens per example
    pooling: ReadoutPooling | None = None  # the classification readout's token pooling (None: the model's own)
    text_column: str | None = None  # table files: the columns of the text, the second text and the label
    text_pair_column: str | None = None
    label_column: str | None = None
    seq_len: Positive = 128  # language models: tokens per block
    lm_loss: LMLoss = "chunked"  # language models: chunked (training/lm_loss.py) or naive per-layer logits
    aligned_layers: Positive | None = None  # language models, aligned loss: k layers drawn per step besides the last
    peft: Literal["lora"] | None = None  # parameter-efficient fine-tuning through peft (training/lora.py)
    lora_r: Positive = 8  # LoRA rank
    lora_alpha: PositiveFinite = 16.0  # LoRA scale alpha / r
    lora_targets: list[str] | None = None  # module-name suffixes to adapt (None: the architecture's defaults)
    train_readout: bool = False  # LoRA: train (a copy of) the shared readout too; frozen by default
    layer_dropout: Annotated[Finite, Field(ge=0, lt=1)] = 0.0  # LayerSkip's p_max (training/layer_dropout.py)
    lp_cv: Annotated[int, Field(ge=2)] = 3  # cross-validation folds of the probe's C
    checkpoint_every: Positive | None = None  # optimizer steps; None = epoch ends only
    resume: bool = False
    overwrite: bool = False  # a fresh run may write into a folder holding files it did not write
    data_dir: PathText | None = None
    num_workers: NonNegative = 0
    cpu: bool = False
    progress: bool = True
    log_with: str | None = None  # experiment trackers: tensorboard | wandb | mlflow | trackio | all (training/log.py)

    @property
    def columns(self) -> Columns | None:
        """The table columns the options name (None: find the usual names)."""
        given = Columns(self.text_column, self.text_pair_column, self.label_column)
        return None if given == Columns() else given

    @property
    def order_seed(self) -> int:
        """The seed of the training data order and augmentation: ``data_seed``, or ``seed`` when unset, so two
        runs can share their initial weights and differ only in the order they see the data."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def stage2(self) -> str:
        """The objective of gradient training (lp-ft fine-tunes with ``ft_objective``)."""
        return self.ft_objective if O.get_objective(self.objective).then_ft_objective else self.objective


KEYS = frozenset(TrainConfig.model_fields)
# Changing these between a checkpoint and its resumption would silently break the run.
RESUME_KEYS = ("model", "data", "train_split", "objective", "ft_objective", "batch_size", "grad_accum", "seed", "data_seed",
               "limit", "depth", "augment", "lr", "schedule", "milestones", "warmup_steps", "layer_weights", "pooling",
               "text_column", "text_pair_column", "label_column", "aligned_layers", "peft", "lora_r", "lora_alpha",
               "lora_targets", "train_readout", "layer_dropout")
# The run's own settings, not the model's: left out of the saved model's ``layerwise.json``.
RUN_ONLY_KEYS = ("out", "resume", "overwrite", "progress", "cpu", "log_with")


def load_preset(name: str) -> dict[str, Any]:
    """A packaged preset (``layerwise/training/presets/NAME.yaml``) as a dict of TrainConfig keys."""
    path = resources.files("layerwise.training").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name[:-5] for p in resources.files("layerwise.training").joinpath("presets").iterdir()
                       if p.name.endswith(".yaml"))
        raise LayerwiseError(f"unknown preset {name!r}: use one of {', '.join(known)}")
    return _read_yaml(path.read_text(encoding="utf-8"), f"preset {name}")


def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 does (YAML 1.1 wants ``1.0e-3`` and
    would hand the schema the string "1e-3")."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    """The mapping in ``text`` with ``-`` in keys read as ``_``; unknown keys name the file and the valid keys."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader()) or {}
    except yaml.YAMLError as e:
        raise LayerwiseError(f"{source} is not valid YAML ({str(e).splitlines()[0]}): fix the file") from e
    except (RecursionError, ValueError):  # nesting past Python's stack, an int of more digits than it converts
        raise LayerwiseError(f"{source} nests too deeply or holds a number too long to read: fix the file") from None
    if not isinstance(data, dict):
        raise LayerwiseError(f"{source} must be a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - KEYS)
    if unknown:
        shown = ", ".join(k if k.isidentifier() else repr(k) for k in unknown)
        raise LayerwiseError(f"{source} has unknown keys {shown}: valid keys are {', '.join(sorted(KEYS))}")
    return data


def _read_config_file(config_file: str | Path) -> dict[str, Any]:
    path = Path(config_file)
    if not path.exists():
        raise LayerwiseError(f"config file {path} not found: pass an existing YAML file")
    return _read_yaml(read_text(path, "config"), str(path))


def resolve_config(preset: str | None = None, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults < preset < config file < explicit overrides (``None`` overrides are ignored), validated once."""
    merged: dict[str, Any] = {}
    sources = []
    if preset:
        merged.update(load_preset(preset))
        sources.append(f"preset {preset}")
    if config_file:
        merged.update(_read_config_file(config_file))
        sources.append(str(config_file))
    given = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    if given:
        merged.update(given)
        sources.append("options")
    return validate(TrainConfig, merged, "training options" + (f" ({' < '.join(sources)})" if sources else ""))  # keys named plainly: one may come from a file
