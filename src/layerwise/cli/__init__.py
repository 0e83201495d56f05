"""The ``layerwise`` command line: one file per command, and the only code that knows flag names.

``app`` holds the Typer application and the entry point ``main`` (errors as one line, exit status 2);
importing this package registers every command.
"""

from layerwise.cli import (  # noqa: F401
    analyze, connect, exit, gen_eval, generate, lens, lpft, models, new_gpt, report, reproduce, train, train_exit_classifier,
    truncate)
from layerwise.cli import merge  # noqa: F401
from layerwise.cli.app import app, main

__all__ = ["app", "main"]
