"""What the commands share: the options base (a bad value is a ``LayerwiseError`` naming its key in backticks),
the output-folder check, and the run's own warnings collected into its results."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import Field, ValidationError

from layerwise.errors import LayerwiseError
from layerwise.schema import Options, describe

Folder = Annotated[Path, Field(strict=False)]  # a path given as str or Path
DTYPES = ("float32", "float64", "bfloat16", "float16")


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


def check_out_dir(out: Path, key: str = "out") -> Path:
    """An output folder that exists as a writable folder or can be created; checked before any long work.

    Writability is probed by creating the folder and a file in it, since permissions alone do not tell
    (root, read-only mounts, a file where a parent folder should be). Only what the probe created is removed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LayerwiseError(f"`{key}` {out} is an existing file: pass a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=".layerwise-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise LayerwiseError(f"`{key}` {out} cannot be written ({e.strerror or e}): pass a writable folder") from e
    finally:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return out


def with_warnings(run: Callable[..., dict], *args: Any, **kwargs: Any) -> dict:
    """``run(*args, **kwargs)``, its own warnings (undefined layers, subsampling) in ``results["warnings"]``."""
    from layerwise.report import warning_messages

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run(*args, **kwargs)
    results["warnings"] = warning_messages(caught)
    return results


MODEL_OUTPUTS = (  # what ``checkpoints.save_model`` writes: own and Hugging Face model and tokenizer files
    "config.json", "model.safetensors", "layerwise.json", "exit_heads.safetensors", "generation_config.json",
    "model.safetensors.index.json", "model-*-of-*.safetensors", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
    "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json")
