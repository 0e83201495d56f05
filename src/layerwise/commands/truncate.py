"""``truncate``: the first k blocks and the readout serving layer k (or exit head k) as a standalone model."""

from __future__ import annotations

from pathlib import Path

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError
from layerwise.run_folder import open_run_folder



class TruncateOptions(CommandOptions):
    """The options of ``truncate`` (``k`` is checked against the model's depth)."""

    model: str  # the model to cut: built-in name, folder or hub name
    k: int  # keep blocks 1..k
    out: Folder  # the new model's folder (never the source)
    overwrite: bool = False


def check_not_source(spec: str, out: Path) -> None:
    """Writing into the model being cut would overwrite it (same folder, or a folder inside it)."""
    source = Path(spec)
    if not source.is_dir():
        return  # a built-in or hub name: nothing on disk to protect
    source, target = source.resolve(), out.resolve()
    if target == source or source in target.parents:
        raise LayerwiseError(f"`out` {out} is the source model {spec} or inside it: pass another folder "
                             "(truncate never overwrites its source)")


def run(options: TruncateOptions) -> Path:
    """Load ``model``, keep blocks 1..k and the readout serving layer k, save to ``out``; returns ``out``."""
    out = Path(options.out)
    check_not_source(options.model, out)
    from layerwise.checkpoints import load_model, save_model, truncate
    from layerwise.checkpoints.save import MODEL_FILES

    folder = open_run_folder(out, "truncate", overwrite=options.overwrite, outputs=MODEL_FILES)
    save_model(truncate(load_model(options.model), options.k), out)
    folder.record()
    return out
