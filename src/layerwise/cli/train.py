"""``layerwise train``: flags → ``commands.train``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.cli.scale import log_with_option
from layerwise.commands import train


@app.command("train")
def train_command(
    model: Optional[str] = typer.Option(None, help="built-in name or model directory [vit-digits]"),
    data: Optional[str] = typer.Option(None, help="data set name or path [digits]"),
    objective: Optional[str] = typer.Option(
        None, help="standard | aligned (alternating) | aligned-joint | cos-reg | multi-exit | multi-exit-joint | lp | lp-ft"),
    out: Optional[Path] = typer.Option(None, help="run directory: log.jsonl, checkpoint/, final model"),
    preset: Optional[str] = typer.Option(None, help="packaged preset, e.g. vit-cifar10-cpu, minilm-sst2-cpu, digits-cpu"),
    config: Optional[Path] = typer.Option(None, help="YAML file with the same keys (flags override it)"),
    epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, help="global batch per forward pass"),
    lr: Optional[float] = typer.Option(None),
    weight_decay: Optional[float] = typer.Option(None),
    schedule: Optional[str] = typer.Option(None, help="constant | cosine | multistep (after --warmup-steps)"),
    warmup_steps: Optional[int] = typer.Option(None),
    milestones: Optional[str] = typer.Option(None, help="multistep epochs, comma list, e.g. 100,150"),
    gamma: Optional[float] = typer.Option(None, help="multistep decay factor"),
    grad_accum: Optional[int] = typer.Option(None),
    max_grad_norm: Optional[float] = typer.Option(None),
    mixed_precision: Optional[str] = typer.Option(None, help="no | bf16 | fp16"),
    seed: Optional[int] = typer.Option(None, help="seed of the initial weights, --limit subsets and dropout [0]"),
    data_seed: Optional[int] = typer.Option(None, help="seed of the training data order and augmentation [--seed]"),
    limit: Optional[int] = typer.Option(None, help="training examples (seeded subset)"),
    eval_limit: Optional[int] = typer.Option(None, help="evaluation examples (seeded subset)"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="image augmentation"),
    ft_objective: Optional[str] = typer.Option(None, help="stage-2 objective of lp-ft [standard]"),
    layer_weights: Optional[str] = typer.Option(None, help="linear | uniform | comma list of L weights"),
    cos_beta: Optional[float] = typer.Option(None, help="β of cos-reg"),
    depth: Optional[int] = typer.Option(None, help="override the depth of an own model (vit-*, mlp-*, gpt-tiny)"),
    max_length: Optional[int] = typer.Option(None, help="text models: tokens per example"),
    pooling: Optional[str] = typer.Option(None, help="classification readout pooling: mean | cls | last "
                                          "[the model's own; a saved model keeps its]"),
    text_column: Optional[str] = typer.Option(None, help="table files: text column [sentence, text, sentence1, …]"),
    text_pair_column: Optional[str] = typer.Option(None, help="table files: second text of a pair [sentence2, …]"),
    label_column: Optional[str] = typer.Option(None, help="table files: label column [label; score = regression]"),
    seq_len: Optional[int] = typer.Option(None, help="language models: tokens per training block"),
    lm_loss: Optional[str] = typer.Option(
        None, help="language models: chunked (per-layer CE without full logits) | naive [chunked]"),
    aligned_layers: Optional[int] = typer.Option(
        None, help="language models, aligned objectives: read out the last layer and k drawn ones per step "
        "(unbiased weights) instead of every layer [all]"),
    peft: Optional[str] = typer.Option(None, help="lora: train LoRA adapters through peft instead of every weight "
                                       "(needs layerwise[peft])"),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank [8]"),
    lora_alpha: Optional[float] = typer.Option(None, help="LoRA alpha (scale alpha/r) [16]"),
    lora_targets: Optional[str] = typer.Option(
        None, help="LoRA: comma list of module-name suffixes [the attention and MLP projections]"),
    train_readout: Optional[bool] = typer.Option(
        None, "--train-readout/--frozen-readout", help="LoRA: train the shared readout too [frozen]"),
    layer_dropout: Optional[float] = typer.Option(
        None, help="LayerSkip layer dropout: skip block l in training with p rising with depth to this at the "
        "last block [0]"),
    eval_split: Optional[str] = typer.Option(None, help="split evaluated after every epoch [test]"),
    train_split: Optional[str] = typer.Option(None, help="split trained on [train]; wikitext2 has only valid/test"),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint every N optimizer steps (and each epoch)"),
    resume: bool = typer.Option(False, "--resume", help="require a checkpoint to resume from (automatic anyway)"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="start a run in a folder that holds other files (they are kept)"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    cpu: Optional[bool] = typer.Option(None, "--cpu", help="force CPU"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    log_with: Optional[str] = log_with_option(),
) -> None:
    """Train with a layer-wise objective (Accelerate: CPU, GPU, `accelerate launch` for several)."""
    options_ = options(train.TrainOptions, locals())
    record = train.run(options_)
    metric = record.get("metric", "accuracy")
    value = (record.get(metric) or [float("nan")])[-1]
    typer.echo(f"wrote {train.config(options_).out}: last-layer {metric} {value:.4f}")
