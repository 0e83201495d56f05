"""``train``: the options (and a ``preset`` / ``config`` file) resolved to one ``TrainConfig`` — defaults < preset
< file < options, validated once — then the trainer (run folder: log.jsonl, metrics.json, checkpoint/, the
final model)."""

from __future__ import annotations

from pathlib import Path

from layerwise.commands.common import CommandOptions, Folder, LogWith
from layerwise.errors import LayerwiseError



class TrainOptions(CommandOptions):
    """The options of ``train``; None leaves a key to the preset, the config file or ``TrainConfig``'s default,
    which validates every value."""

    model: str | None = None
    data: str | None = None
    objective: str | None = None
    out: Folder | None = None
    preset: str | None = None  # packaged preset, e.g. vit-cifar10-cpu, minilm-sst2-cpu, digits-cpu
    config: Folder | None = None  # YAML file with the same keys (options override it)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    milestones: str | list[int] | None = None  # multistep epochs, e.g. "100,150"
    gamma: float | None = None
    grad_accum: int | None = None
    max_grad_norm: float | None = None
    mixed_precision: str | None = None
    seed: int | None = None
    data_seed: int | None = None
    limit: int | None = None
    eval_limit: int | None = None
    augment: bool | None = None
    ft_objective: str | None = None
    layer_weights: str | list[float] | None = None  # linear | uniform | L weights, e.g. "0.1,0.2,…"
    cos_beta: float | None = None
    depth: int | None = None
    max_length: int | None = None
    pooling: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    seq_len: int | None = None
    lm_loss: str | None = None
    aligned_layers: int | None = None
    peft: str | None = None  # lora: train LoRA adapters (peft) instead of every weight
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_targets: str | list[str] | None = None  # module-name suffixes, e.g. "q_proj,v_proj"
    train_readout: bool | None = None  # LoRA: train the shared readout too (frozen by default)
    layer_dropout: float | None = None  # LayerSkip's p_max (skipped blocks in training only)
    eval_split: str | None = None
    train_split: str | None = None
    checkpoint_every: int | None = None
    resume: bool = False  # require a checkpoint to resume from (automatic anyway)
    overwrite: bool = False  # start a run in a folder that holds other files (they are kept)
    data_dir: Folder | None = None
    cpu: bool | None = None
    progress: bool | None = None
    log_with: LogWith = None  # experiment trackers (docs/scaling.md)


def _numbers(text: str | list, key: str, kind: type) -> list:
    try:
        return [kind(x) for x in (text.split(",") if isinstance(text, str) else text) if str(x).strip()]
    except ValueError as e:
        raise LayerwiseError(f"cannot parse `{key}` ({e}): pass comma-separated numbers") from e


def config(options: TrainOptions):
    """The ``TrainConfig`` the options resolve to (defaults < preset < file < options)."""
    from layerwise.training import resolve_config

    o = options
    weights = o.layer_weights if o.layer_weights in (None, "linear", "uniform") else _numbers(
        o.layer_weights, "layer_weights", float)
    steps = None if o.milestones is None else _numbers(o.milestones, "milestones", int)
    values = o.model_dump(exclude={"preset", "config", "layer_weights", "milestones", "resume", "overwrite",
                                   "out", "data_dir", "lora_targets"})
    targets = o.lora_targets.split(",") if isinstance(o.lora_targets, str) else o.lora_targets
    targets = None if targets is None else [t.strip() for t in targets if t.strip()] or None
    return resolve_config(o.preset, o.config, **values, layer_weights=weights, milestones=steps, lora_targets=targets,
                          out=str(o.out) if o.out else None, data_dir=str(o.data_dir) if o.data_dir else None,
                          resume=o.resume or None, overwrite=o.overwrite or None)


def run(options: TrainOptions) -> dict:
    """Train as configured; returns the final evaluation record (per-layer metrics, ``metric``)."""
    cfg = config(options)
    from layerwise.training.log import tracker_names

    tracker_names(cfg.log_with)  # a missing tracker package is refused before any work
    if cfg.peft:  # before any data or model loads
        from layerwise.checkpoints.adapters import require_peft

        require_peft("peft")
    from layerwise.training import train  # the Trainer opens its run folder (``open_train_folder``) before any work

    return train(cfg)
