"""Training: configuration and presets, objectives, the Accelerate trainer, checkpointing and the run
folder, schedules, the linear probe, and the Hugging Face ``Trainer`` integration (``hf_trainer``,
imported on demand)."""

from layerwise._deprecated import moved_names
from layerwise.training import objectives
from layerwise.training.checkpointing import Position, latest_checkpoint, load_checkpoint, rng_state, set_rng_state
from layerwise.training.config import TrainConfig, load_preset, resolve_config
from layerwise.training.probe import fit_probe, head_inputs, probe_to_linear, readout_linear
from layerwise.training.schedules import epoch_order, make_optimizer, make_scheduler, shard
from layerwise.training.setup import build_bundle
from layerwise.training.trainer import ObjectiveModule, Trainer, train

__all__ = ["ObjectiveModule", "Position", "TrainConfig", "Trainer", "build_bundle", "epoch_order", "fit_probe",
           "head_inputs", "latest_checkpoint", "load_checkpoint", "load_preset", "make_optimizer", "make_scheduler",
           "objectives", "probe_to_linear", "readout_linear", "resolve_config", "rng_state", "set_rng_state",
           "shard", "train"]

__getattr__ = moved_names(__name__, {"evaluate": "layerwise.training.scores:evaluate_layers"})
