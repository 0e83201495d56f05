"""The ``layerwise`` command line. Each command is a thin wrapper over one library module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from layerwise.errors import LayerwiseError

def _report_warnings(results: dict) -> None:
    for message in results.get("warnings", []):
        typer.echo(f"warning: {message}", err=True)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Study how representations move through the layers of a transformer, and use it.")


@app.command()
def models() -> None:
    """List the built-in model names and the supported architectures."""
    from layerwise.adapters import supported_architectures
    from layerwise.zoo import describe_models

    for name, text in describe_models().items():
        typer.echo(f"{name:14s} {text}")
    typer.echo("\narchitectures: " + "; ".join(supported_architectures()))


@app.command()
def analyze(
    model: str = typer.Option("minilm", help="built-in name, model directory, or hub name"),
    data: str = typer.Option("sentences", help="data set name or path (see README)"),
    out: Path = typer.Option(Path("runs/analyze"), help="output directory"),
    split: str = typer.Option("test", help="data split"),
    limit: Optional[int] = typer.Option(None, help="use at most this many samples"),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None, help="cls | last | mean (default: the model's own)"),
    measures: str = typer.Option("cos,cka_linear,cka_linear_debiased", help="comma list (see README), or 'all'"),
    sample_cap: int = typer.Option(2000, help="max samples for measures that need N×N structure"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0),
) -> None:
    """Per-layer similarity, readout accuracy and residual analysis; writes results.json, CSV and figures."""
    from layerwise.analysis import run_analysis

    results = run_analysis(model=model, data=data, out=out, split=split, limit=limit, batch_size=batch_size,
                           pooling=pooling, measures=measures, sample_cap=sample_cap, data_dir=data_dir,
                           device=device, seed=seed)
    _report_warnings(results)
    typer.echo(f"wrote {out}/results.json")


@app.command()
def compare(
    model_a: str = typer.Option(..., "--model-a"),
    model_b: str = typer.Option(..., "--model-b"),
    data: str = typer.Option("sentences"),
    out: Path = typer.Option(Path("runs/compare")),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    pooling: Optional[str] = typer.Option(None),
    measures: str = typer.Option("cos,cka_linear,cka_linear_debiased", help="comma list (see README), or 'all'"),
    sample_cap: int = typer.Option(2000),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Cross-model L_a×L_b similarity matrices on the same inputs."""
    from layerwise.analysis import run_compare

    results = run_compare(model_a=model_a, model_b=model_b, data=data, out=out, split=split, limit=limit,
                          batch_size=batch_size, pooling=pooling, measures=measures, sample_cap=sample_cap,
                          data_dir=data_dir, device=device, seed=seed)
    _report_warnings(results)
    typer.echo(f"wrote {out}/results.json")




@app.command()
def train(
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
    seed: Optional[int] = typer.Option(None),
    limit: Optional[int] = typer.Option(None, help="training examples (seeded subset)"),
    eval_limit: Optional[int] = typer.Option(None, help="evaluation examples (seeded subset)"),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="image augmentation"),
    ft_objective: Optional[str] = typer.Option(None, help="stage-2 objective of lp-ft [standard]"),
    layer_weights: Optional[str] = typer.Option(None, help="linear | uniform | comma list of L weights"),
    cos_beta: Optional[float] = typer.Option(None, help="β of cos-reg"),
    depth: Optional[int] = typer.Option(None, help="override the depth of an own model (vit-*, mlp-*, gpt-tiny)"),
    max_length: Optional[int] = typer.Option(None, help="text models: tokens per example"),
    seq_len: Optional[int] = typer.Option(None, help="language models: tokens per training block"),
    eval_split: Optional[str] = typer.Option(None, help="split evaluated after every epoch [test]"),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint every N optimizer steps (and each epoch)"),
    resume: bool = typer.Option(False, "--resume", help="require a checkpoint to resume from (automatic anyway)"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    cpu: Optional[bool] = typer.Option(None, "--cpu", help="force CPU"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> None:
    """Train with a layer-wise objective (Accelerate: CPU, GPU, `accelerate launch` for several)."""
    from layerwise.training import resolve_config, train as run_training

    try:
        weights = layer_weights if layer_weights in (None, "linear", "uniform") else [
            float(w) for w in layer_weights.split(",")]
        steps = [int(m) for m in milestones.split(",") if m] if milestones is not None else None
    except ValueError as e:
        raise LayerwiseError(f"cannot parse --layer-weights/--milestones ({e}): pass comma-separated numbers") from e
    cfg = resolve_config(
        preset, config, model=model, data=data, objective=objective, out=str(out) if out else None, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
        milestones=steps, gamma=gamma,
        grad_accum=grad_accum, max_grad_norm=max_grad_norm, mixed_precision=mixed_precision, seed=seed, limit=limit,
        eval_limit=eval_limit, augment=augment, ft_objective=ft_objective, layer_weights=weights, cos_beta=cos_beta,
        depth=depth, max_length=max_length, seq_len=seq_len, eval_split=eval_split, checkpoint_every=checkpoint_every, resume=resume or None,
        data_dir=str(data_dir) if data_dir else None, cpu=cpu, progress=progress)
    record = run_training(cfg)
    acc = record.get("accuracy") or [float("nan")]
    typer.echo(f"wrote {cfg.out}: last-layer accuracy {acc[-1]:.4f}")


@app.command("exit")
def exit_(
    model: list[str] = typer.Option(..., "--model", help="model (repeat --model to compare several)"),
    data: str = typer.Option(..., help="labelled classification data set"),
    policy: str = typer.Option("confidence", help="confidence | entropy | patience"),
    threshold: float = typer.Option(0.9, help="τ: max softmax ≥ τ, entropy ≤ τ, or patience k"),
    out: Path = typer.Option(Path("runs/exit"), help="output directory"),
    split: str = typer.Option("test"),
    limit: Optional[int] = typer.Option(None),
    batch_size: int = typer.Option(64),
    min_layer: int = typer.Option(1, help="first layer that may exit"),
    max_layer: Optional[int] = typer.Option(None, help="last layer (default L): everything left exits there"),
    calibrate_eps: float = typer.Option(0.01, help="allowed accuracy drop on the validation split"),
    val_split: str = typer.Option("0.5", help="fraction of the data held out for calibration, or a split name"),
    delta: float = typer.Option(0.01, help="minimal depth: smallest k within δ of the best layer"),
    shift_data: Optional[str] = typer.Option(None, help="also report per-layer accuracy on this data set"),
    repeats: int = typer.Option(1, help="timing repeats (median)"),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
) -> None:
    """Early-exit evaluation: accuracy, exit histogram, speedups, threshold sweep, calibration, minimal depth."""
    from layerwise.early_exit import evaluate_exit

    evaluate_exit(model, data, out, policy=policy, threshold=threshold, split=split, limit=limit,
                  batch_size=batch_size, calibrate_eps=calibrate_eps, val_split=val_split, delta=delta,
                  min_layer=min_layer, max_layer=max_layer, device=device, seed=seed, data_dir=data_dir,
                  repeats=repeats, shift_data=shift_data)
    typer.echo(f"wrote {out}/results.json")


@app.command()
def truncate(
    model: str = typer.Option(..., help="model to cut"),
    k: int = typer.Option(..., help="keep blocks 1..k and the readout (or exit head k)"),
    out: Path = typer.Option(..., help="output model directory"),
) -> None:
    """Export the first k blocks plus the readout as a standalone model."""
    from layerwise.truncate import truncate_model

    typer.echo(f"wrote {truncate_model(model, k, out)}")


def _close_progress_bars() -> None:
    """A bar interrupted by an error would otherwise share its line with the message."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def main() -> None:
    """Entry point: bad input prints one line and exits 2, without a traceback."""
    try:
        app()
    except LayerwiseError as e:
        _close_progress_bars()
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
