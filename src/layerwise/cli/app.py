"""The Typer application and the entry point: bad input prints one line ``error: …`` and exits 2.

The library names an option by its key in backticks (`` `batch_size` ``); ``_fail`` renders each as the flag
that sets it (``--batch-size``), so a command-line user reads flags and a Python user reads keywords.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable, TypeVar

import typer

from layerwise.errors import LayerwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Study how representations move through the layers of a transformer, and use it.")

O = TypeVar("O")
OPTION_KEY = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)*)`")  # a backticked snake_case key


def flag_name(key: str) -> str:
    """``batch_size`` → ``--batch-size``: how Typer spells a parameter on the command line."""
    return "--" + key.replace("_", "-")


def as_flags(message: str) -> str:
    """Every backticked option key of a library message as its flag: `` `val_split` `` → ``--val-split``."""
    return OPTION_KEY.sub(lambda m: flag_name(m.group(1)), message)


def options(schema: Callable[..., O], params: dict[str, Any]) -> O:
    """A command's options from its Typer parameters (same names); a bad value is a ``LayerwiseError`` naming
    its key, which ``_fail`` prints as the flag. Only values other than the default are passed, so that the
    options' ``model_fields_set`` tells what the user gave (``commands.common.only_with``)."""
    fields = schema.model_fields  # type: ignore[attr-defined]
    return schema(**{k: v for k, v in params.items() if k not in fields or fields[k].is_required()
                     or v != fields[k].get_default(call_default_factory=True)})


OPTION_KEY = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)*)`")


def as_flags(message: str) -> str:
    """A library message as the CLI prints it: each option key in backticks becomes its flag
    (`` `val_split` `` → ``--val-split``; see ``errors.LayerwiseError``)."""
    return OPTION_KEY.sub(lambda m: flag_name(m.group(1)), message)


def report_warnings(results: dict) -> None:
    """The run's own warnings (undefined layers, subsampling), one line each on stderr."""
    for message in results.get("warnings", []):
        typer.echo(f"warning: {as_flags(message)}", err=True)


def _close_progress_bars() -> None:
    """A bar interrupted by an error would otherwise share its line with the message."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def _fail(message: str) -> None:
    """Print ``error: message`` as exactly one line, option keys spelled as flags, and exit 2."""
    _close_progress_bars()
    typer.echo("error: " + " ".join(as_flags(message).split()), err=True)
    sys.exit(2)


def _usage_hint(e: typer.TyperException) -> str:
    ctx = getattr(e, "ctx", None)
    return f" (see `{ctx.command_path} --help`)" if ctx is not None else ""


def main() -> None:
    """Entry point: bad input, including bad or missing flags, prints one line and exits 2, without a traceback.

    Click's own usage box is bypassed (``standalone_mode=False``) so that its errors read like ours; a bare
    ``layerwise`` prints the help.
    """
    import layerwise.cli  # noqa: F401  (registers the commands)
    from layerwise.parallel import quiet_other_ranks

    quiet_other_ranks()  # under a launcher the summary is rank 0's

    try:
        status = app(args=sys.argv[1:] or ["--help"], prog_name="layerwise", standalone_mode=False)
    except typer.TyperException as e:  # Click's usage errors: a flag that is unknown, missing or mistyped
        _fail(e.format_message() + _usage_hint(e))
    except LayerwiseError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(status, int) and status:  # --help returns 0; an interrupt inside a command returns 130
        sys.exit(status)
