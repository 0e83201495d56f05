"""``merge``: a LoRA run folder's adapters folded into the base weights (peft's ``merge_and_unload``), saved as a
plain model folder (the format of every other model folder) that runs at full speed and needs neither peft nor
the base model."""

from __future__ import annotations

from pathlib import Path

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError
from layerwise.run_folder import open_run_folder


class MergeOptions(CommandOptions):
    """The options of ``merge``."""

    model: str  # a LoRA run folder (``train --peft lora``)
    out: Folder  # the merged model's folder (never the run folder)
    overwrite: bool = False


def run(options: MergeOptions) -> Path:
    """Load the run's base model and adapters, merge, save to ``out``; returns ``out``."""
    from layerwise.commands.truncate import check_not_source

    out, source = Path(options.out), Path(options.model)
    if not (source.is_dir() and (source / "adapter_config.json").exists()):
        raise LayerwiseError(f"`model` {options.model} holds no adapters (adapter_config.json): merge takes a run "
                             "folder of LoRA fine-tuning; other models are plain already", option="model")
    check_not_source(options.model, out)
    from layerwise.checkpoints import load_model, save_model
    from layerwise.checkpoints.adapters import merged_bundle
    from layerwise.checkpoints.save import MODEL_FILES

    folder = open_run_folder(out, "merge", overwrite=options.overwrite, outputs=MODEL_FILES)
    bundle = merged_bundle(load_model(options.model))
    bundle.meta["merged_from"] = str(source.resolve())
    save_model(bundle, out)
    folder.record()
    return out
