"""What the commands share: the options base (a bad value is a ``LayerwiseError`` naming its key in backticks)
and the run's own warnings collected into its results. The output folder's rule is ``layerwise.run_folder``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import Field, ValidationError

from layerwise.errors import LayerwiseError
from layerwise.schema import Options, describe

Folder = Annotated[Path, Field(strict=False)]  # a path given as str or Path
DTYPES = ("float32", "float64", "bfloat16", "float16", "bf16", "fp16")  # bf16, fp16: see HALF_DTYPES
# The half-precision forward passes: features measured against float32 on a small subset, with a warning
# naming the largest difference (``evaluation.precision``); the accumulators stay float64.
HALF_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "bfloat16": "bfloat16", "float16": "float16"}

# Scaling out (docs/scaling.md): the option types every command that offers them shares, one field line each.
# ``log_with``: experiment trackers (checked against the installed packages by ``training.log.tracker_names``);
# ``device_map``: auto | balanced | a JSON file mapping module names to devices (``checkpoints.dispatch``).
LogWith = str | None
DeviceMap = str | None


class CommandOptions(Options):
    """A command's options: keys are the keywords of the Python API and, with dashes, the command line's flags.
    Constructing or assigning a bad value raises a ``LayerwiseError`` naming the key (`` `batch_size` ``).
    Construct them directly (not through ``schema.validate``: pydantic would wrap the error of this ``__init__``)."""

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise LayerwiseError(describe(e)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            raise LayerwiseError(describe(e)) from None



def only_with(options: Options, active: bool, needed: str, *keys: str) -> None:
    """Refuse options among ``keys`` that were given while what they apply with (``needed``, e.g.
    ``"`speculative`"``) is off: an option that would be ignored is an error, never a silent no-op."""
    given = [k for k in keys if k in options.model_fields_set]
    if given and not active:
        names = ", ".join(f"`{k}`" for k in given)
        raise LayerwiseError(f"{names} only {'applies' if len(given) == 1 else 'apply'} with {needed}: add {needed} "
                             f"or drop {names}", option=given[0])


def with_warnings(run: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
    """``run(*args, **kwargs)``, its own warnings (undefined layers, subsampling) in ``results["warnings"]``."""
    from layerwise.report import warning_messages

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run(*args, **kwargs)
    results["warnings"] = warning_messages(caught)
    return results

