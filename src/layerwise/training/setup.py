"""What a training run is built from before its first step: the model bundle a ``TrainConfig`` names, and the
Accelerator it runs on (both refuse what they cannot do, before any work)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from layerwise.checkpoints import ModelBundle, load_model, make_exit_heads, set_readout_pooling
from layerwise.errors import LayerwiseError
from layerwise.models import StackModel, build_own
from layerwise.parallel import on_cpu
from layerwise.stack import LayerStack
from layerwise.training.config import TrainConfig
from layerwise.training.lora import apply_peft
from layerwise.training.objectives import get_objective


def build_bundle(cfg: TrainConfig, num_classes: int | None) -> ModelBundle:
    """Load the model, apply --depth / --max-length (to this bundle only), add multi-exit heads when needed."""
    # An untrained built-in draws its weights from `seed` (the run's seed varies them; every process agrees).
    bundle = load_model(cfg.model, num_classes=num_classes, init_seed=cfg.seed)
    if cfg.depth is not None:
        if not isinstance(bundle.model, StackModel):
            raise LayerwiseError("`depth` applies to the project's own models (vit-*, gpt-tiny, mlp-*) only",
                                 option="depth")
        model = build_own({**bundle.model.config_dict(), "depth": cfg.depth})
        bundle = ModelBundle(bundle.name, model, LayerStack(model), bundle.inputs, meta=bundle.meta)
    if cfg.max_length is not None:
        bundle.inputs = replace(bundle.inputs, max_length=cfg.max_length)
    if cfg.pooling is not None:
        set_readout_pooling(bundle, cfg.pooling)
    bundle = apply_peft(bundle, cfg)  # LoRA adapters (``peft``), or a LoRA run folder merged for full training
    if get_objective(cfg.stage2).exit_heads and bundle.exit_heads is None:
        heads = make_exit_heads(bundle.stack)
        heads[-1] = bundle.stack.readout  # the last exit is the model's own readout
        bundle.exit_heads = heads
    return bundle


def make_accelerator(cfg: TrainConfig):
    """The Accelerator, refusing what it cannot run: fp16 off CUDA, a batch that does not split evenly."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from layerwise.training.log import TRACKER_DIR, tracker_names

    trackers = tracker_names(cfg.log_with)  # a missing tracker package is refused before any work
    # Alternating objectives leave some parameters unused on half the steps (multi-exit heads).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=get_objective(cfg.stage2).leaves_parameters_unused
                                               or cfg.layer_dropout > 0)  # skipped blocks leave theirs unused
    try:  # mixed precision is ours (autocast + scaler), so in-process runs may differ in it
        # Launched on a machine without GPUs: `cpu`, so that Accelerate runs DDP over gloo (``parallel.on_cpu``).
        acc = Accelerator(mixed_precision="no", cpu=on_cpu(cfg.cpu), kwargs_handlers=[ddp], log_with=trackers or None,
                          project_dir=str(Path(cfg.out) / TRACKER_DIR))
    except ValueError as e:
        raise LayerwiseError(f"Accelerate was already set up differently in this process ({e}): "
                             "train in a new process") from e
    except RuntimeError as e:  # e.g. Accelerate's FSDP plugin on a machine without GPUs
        raise LayerwiseError(f"Accelerate cannot set up this launch ({' '.join(str(e).split())}): FSDP runs on GPUs "
                             "only; on CPU launch without the FSDP config (torchrun: DDP over gloo)") from e
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and acc.num_processes == 1:  # e.g. an FSDP config launched on CPU: each process would run alone
        raise LayerwiseError(f"launched as {launched} processes, but Accelerate set this one up alone "
                             f"({acc.distributed_type}): FSDP runs on GPUs only; on CPU launch without the FSDP config "
                             "(torchrun: DDP over gloo)")
    if cfg.mixed_precision == "fp16" and acc.device.type != "cuda":  # elsewhere fp16 used to be ignored silently
        raise LayerwiseError(f"fp16 mixed precision needs a CUDA GPU and this run trains on {acc.device.type}: "
                             "use mixed precision bf16 or no")
    if cfg.batch_size % acc.num_processes:
        raise LayerwiseError(f"batch size {cfg.batch_size} is not divisible by {acc.num_processes} processes")
    return acc
