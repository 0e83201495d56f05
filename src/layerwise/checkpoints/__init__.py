"""Models by name and on disk: built-in names, loading and saving, multi-exit heads, truncated copies."""

from layerwise.checkpoints.builtin import BUILTIN, describe_models
from layerwise.checkpoints.bundle import ModelBundle, make_bundle, set_readout_pooling, truncate
from layerwise.checkpoints.load import load_model
from layerwise.checkpoints.save import save_model
from layerwise.stack.heads import exit_readouts, make_exit_heads  # the multi-exit heads saved with a model

__all__ = ["BUILTIN", "ModelBundle", "describe_models", "exit_readouts", "load_model", "make_bundle", "set_readout_pooling",
           "make_exit_heads", "save_model", "truncate"]
