"""Deprecated: ``layerwise.zoo`` moved to ``layerwise.checkpoints``; this path keeps importing for one release."""

from layerwise._deprecated import reexport

reexport(__name__, {'layerwise.checkpoints': ['BUILTIN', 'ModelBundle', 'load_model', 'save_model', 'make_exit_heads',
                           'describe_models'],
 'layerwise.report.serialize': ['atomic_save_tensors', 'atomic_write']})
