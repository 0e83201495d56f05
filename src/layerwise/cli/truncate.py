"""``layerwise truncate``."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwise.cli.app import app, check_out_dir
from layerwise.errors import LayerwiseError


def _check_not_source(spec: str, out: Path) -> None:
    """Writing into the model being cut would overwrite it (same folder, or a folder inside it)."""
    source = Path(spec)
    if not source.is_dir():
        return  # a built-in or hub name: nothing on disk to protect
    source, target = source.resolve(), out.resolve()
    if target == source or source in target.parents:
        raise LayerwiseError(f"--out {out} is the source model {spec} or inside it: pass another folder "
                             "(truncate never overwrites its source)")


def truncate_model(spec: str, k: int, out: str | Path) -> Path:
    """Load ``spec``, keep blocks 1..k and the readout serving layer k, save to ``out`` (not the source)."""
    out = Path(out)
    _check_not_source(spec, out)
    check_out_dir(out)
    from layerwise.checkpoints import load_model, save_model, truncate  # after the checks: they need no torch

    return save_model(truncate(load_model(spec), k), out)


@app.command("truncate")
def truncate_command(
    model: str = typer.Option(..., help="model to cut"),
    k: int = typer.Option(..., help="keep blocks 1..k and the readout (or exit head k)"),
    out: Path = typer.Option(..., help="output model directory"),
) -> None:
    """Export the first k blocks plus the readout as a standalone model."""
    typer.echo(f"wrote {truncate_model(model, k, out)}")
