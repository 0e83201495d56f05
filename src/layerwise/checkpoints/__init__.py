"""Models by name and on disk: built-in names, loading and saving, multi-exit heads, truncated copies."""

from layerwise.checkpoints.builtin import BUILTIN, describe_models
from layerwise.checkpoints.bundle import ModelBundle, exit_readouts, make_bundle, make_exit_heads, truncate
from layerwise.checkpoints.load import load_model
from layerwise.checkpoints.save import save_model

__all__ = ["BUILTIN", "ModelBundle", "describe_models", "exit_readouts", "load_model", "make_bundle",
           "make_exit_heads", "save_model", "truncate"]
