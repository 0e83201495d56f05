"""``layerwise lpft``: flags → ``commands.lpft`` (imported on use: it imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from layerwise.cli.app import app, options
from layerwise.cli.scale import log_with_option
from layerwise.errors import LayerwiseError


def _rates(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise LayerwiseError(f"cannot parse {flag} {text!r} ({e}): pass comma-separated learning rates") from e


@app.command("lpft")
def lpft_command(
    model: str = typer.Option("minilm", help="pretrained classifier: built-in name or model directory"),
    data: str = typer.Option("sst2", help="labelled classification data set"),
    out: Path = typer.Option(Path("runs/lpft"), help="output folder: ft/, lp/, lpft/, results.json, figures"),
    split: str = typer.Option("test", help="evaluation split (SST-2: dev)"),
    val_split: str = typer.Option("0.2", help="fraction of the training subset held out for validation, or a split"),
    limit: Optional[int] = typer.Option(None, help="training examples (seeded subset, before the hold-out)"),
    eval_limit: Optional[int] = typer.Option(None, help="evaluation examples per split (seeded subset)"),
    shift_data: Optional[str] = typer.Option(None, help="a second data set: accuracy and ECE under shift"),
    shift_split: str = typer.Option("test", help="split of --shift-data"),
    epochs: int = typer.Option(1, help="fine-tuning epochs of FT and LP-FT"),
    batch_size: int = typer.Option(32),
    ft_lrs: str = typer.Option("1e-5,3e-5,1e-4", help="FT learning-rate grid (chosen on validation)"),
    lpft_lrs: str = typer.Option("1e-6,3e-6,1e-5", help="LP-FT learning-rate grid (chosen on validation)"),
    ft_objective: str = typer.Option("standard", help="fine-tuning objective of FT and LP-FT, e.g. aligned"),
    weight_decay: float = typer.Option(0.0),
    max_length: Optional[int] = typer.Option(None, help="tokens per example"),
    lp_cv: int = typer.Option(3, help="cross-validation folds of the probe's C"),
    ntk_subset: int = typer.Option(256, help="training examples of the eNTK"),
    ntk_chunk: int = typer.Option(4, help="eNTK samples per Jacobian chunk (memory ≈ 2·chunk·C·P·4 bytes)"),
    ntk_memory: float = typer.Option(4.0, help="memory bound of the eNTK in GiB"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    data_dir: Optional[Path] = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="write into a folder holding other files (kept)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    log_with: Optional[str] = log_with_option(),
) -> None:
    """Compare FT, LP and LP-FT: head norm, feature change per layer, eNTK parts, calibration, accuracy."""
    params = dict(locals(), ft_lrs=_rates(ft_lrs, "--ft-lrs"), lpft_lrs=_rates(lpft_lrs, "--lpft-lrs"))
    from layerwise.commands import lpft

    results = lpft.run(options(lpft.LpftOptions, params))
    for name, r in results["recipes"].items():
        typer.echo(f"{name}: accuracy {r['accuracy']:.4f}, head norm {r['head_norm']['final']:.3f}, "
                   f"ECE {r['ece']:.4f} → {r['ece_temperature_scaled']:.4f} after temperature scaling")
    typer.echo(f"wrote {out}/results.json")
