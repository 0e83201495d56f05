"""The Typer application and the entry point: bad input prints one line ``error: …`` and exits 2."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from layerwise.errors import LayerwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Study how representations move through the layers of a transformer, and use it.")


def report_warnings(results: dict) -> None:
    """The run's own warnings (undefined layers, subsampling), one line each on stderr."""
    for message in results.get("warnings", []):
        typer.echo(f"warning: {message}", err=True)


def check_out_dir(out: Path, option: str = "--out") -> Path:
    """An output folder that exists as a folder or can be created; checked before any long work."""
    if out.exists() and not out.is_dir():
        raise LayerwiseError(f"{option} {out} is an existing file: pass a folder")
    return out


def _close_progress_bars() -> None:
    """A bar interrupted by an error would otherwise share its line with the message."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def main() -> None:
    """Entry point: bad input prints one line and exits 2, without a traceback."""
    import layerwise.cli  # noqa: F401  (registers the commands)

    try:
        app()
    except LayerwiseError as e:
        _close_progress_bars()
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
