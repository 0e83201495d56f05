"""``layerwise connect``: layer-wise linear mode connectivity of two models on one data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import typer
from pydantic import PositiveInt

from layerwise.cli.app import Flags, app, check_flags, check_out_dir
from layerwise.errors import LayerwiseError


class ConnectFlags(Flags):
    """The flags of ``connect`` checked before anything loads (α grid and modes are checked by the library)."""

    batch_size: PositiveInt
    limit: PositiveInt | None
    bn_limit: PositiveInt
    seq_len: PositiveInt
    random_seeds: PositiveInt


def _parse_alphas(alphas: str | Sequence[float] | None) -> list[float]:
    from layerwise.evaluation.connectivity import check_alphas, default_alphas

    if alphas is None:
        return default_alphas()
    if isinstance(alphas, str):
        try:
            alphas = [float(a) for a in alphas.split(",") if a.strip()]
        except ValueError as e:
            raise LayerwiseError(f"cannot parse --alphas {alphas!r} ({e}): pass comma-separated numbers in [0, 1]") \
                from e
    try:
        return check_alphas(alphas)
    except LayerwiseError as e:
        raise LayerwiseError(f"--alphas: {e}") from None


def _same_inputs(a, b) -> None:
    """Both models must read the batches made for A (same modality, image size, tokenizer)."""
    def key(spec):
        tok = spec.tokenizer
        return (spec.modality, spec.image_size, spec.channels, spec.input_dim, type(tok).__name__,
                getattr(tok, "vocab_size", None))

    if key(a.inputs) != key(b.inputs):
        raise LayerwiseError(f"the models read different inputs ({a.inputs.modality} and {b.inputs.modality}, or "
                             "other image sizes or tokenizers): pass two models of one architecture")


def run_connect(model_a: str, model_b: str, data: str, out: str | Path, *, modes: Sequence[str] = ("single",),
                alphas: str | Sequence[float] | None = None, split: str = "test", limit: int | None = None,
                batch_size: int = 64, seq_len: int = 128, bn_reset: bool = True, bn_split: str = "train",
                bn_limit: int = 2000, match: bool = False, readout_from_b: bool = False, random_seeds: int = 3,
                filter_normalised: bool = False, device: str = "auto", seed: int = 0,
                data_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """``layerwise connect``: write ``out/results.json`` and the figures."""
    from layerwise.evaluation.connectivity import check_modes

    check_flags(ConnectFlags, batch_size=batch_size, limit=limit, bn_limit=bn_limit, seq_len=seq_len,
                random_seeds=random_seeds)
    modes = check_modes(list(modes))
    grid = _parse_alphas(alphas)
    out = check_out_dir(Path(out))
    from layerwise.checkpoints import BUILTIN, load_model  # after the checks: a bad flag is answered without torch
    from layerwise.data import load_dataset, make_loader, materialize
    from layerwise.device import pick_device
    from layerwise.evaluation.connect import check_pair, connect
    from layerwise.report.writers import write_connect
    from layerwise.stack.surgery import batchnorms

    dev = pick_device(device)
    ds = load_dataset(data, split, limit=limit, seed=seed, data_dir=data_dir)
    classes = ds.num_classes if ds.kind != "corpus" else None
    a, b = (load_model(s, num_classes=classes if s in BUILTIN else None) for s in (model_a, model_b))
    check_pair(a, b, match)
    _same_inputs(a, b)
    if (ds.kind == "corpus") != (a.stack.task == "lm"):
        what = "a text corpus" if ds.kind == "corpus" else "labelled examples"
        raise LayerwiseError(f"{data} holds {what}, which {a.stack.task} models cannot be scored on: pass "
                             f"{'a text corpus' if a.stack.task == 'lm' else 'a labelled data set'}")
    for bundle, spec in ((a, model_a), (b, model_b)):
        ds.check_labels(bundle.stack.num_classes, spec)
        bundle.model.to(dev).eval()
    batches = materialize(make_loader(ds, a.inputs, batch_size, seq_len=seq_len), dev)
    bn_batches = None
    if bn_reset and batchnorms(a.model):
        bn_ds = load_dataset(data, bn_split, limit=bn_limit, seed=seed, data_dir=data_dir)
        bn_batches = materialize(make_loader(bn_ds, a.inputs, batch_size, seq_len=seq_len), dev)
    results = connect(a, b, batches, modes=modes, alphas=grid, bn_batches=bn_batches, bn_reset=bn_reset,
                      match=match, readout_from_b=readout_from_b, random_seeds=random_seeds,
                      filter_normalised=filter_normalised, seed=seed, progress=progress)
    results = {"model_a": model_a, "model_b": model_b, "data": data, "split": split, "limit": limit,
               "device": str(dev), "alphas": grid, **results}
    write_connect(results, out)
    return results


@app.command("connect")
def connect_command(
    model_a: str = typer.Option(..., "--model-a", help="model A (built-in name or directory)"),
    model_b: str = typer.Option(..., "--model-b", help="model B, of A's architecture"),
    data: str = typer.Option(..., help="evaluation data set (labelled, or a corpus for language models)"),
    mode: list[str] = typer.Option(["single"], "--mode", help="full | single | cumulative | random (repeatable)"),
    out: Path = typer.Option(Path("runs/connect"), help="output directory"),
    alphas: Optional[str] = typer.Option(None, help="α grid, comma list in [0, 1] [11 points, 0 to 1]"),
    split: str = typer.Option("test", help="evaluation split"),
    limit: Optional[int] = typer.Option(None, help="evaluation examples (seeded subset; corpus: blocks)"),
    batch_size: int = typer.Option(64),
    seq_len: int = typer.Option(128, help="language models: tokens per evaluation block"),
    bn_reset: bool = typer.Option(True, "--bn-reset/--no-bn-reset",
                                  help="re-estimate BatchNorm statistics at every interpolated point"),
    bn_split: str = typer.Option("train", help="split the BatchNorm statistics are re-estimated on"),
    bn_limit: int = typer.Option(2000, help="examples for BatchNorm re-estimation"),
    match: bool = typer.Option(False, "--match", help="also permute B's units to A's (weight matching) first"),
    readout_from_b: bool = typer.Option(False, "--readout-from-b",
                                        help="A reads out through B's readout (pretrained body vs fine-tuned)"),
    random_seeds: int = typer.Option(3, help="random mode: directions averaged per group"),
    filter_norm: bool = typer.Option(False, "--filter-norm", help="random mode: filter-normalised directions"),
    data_dir: Optional[Path] = typer.Option(None),
    device: str = typer.Option("auto"),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Layer-wise linear mode connectivity: loss and error barriers when groups of layers are interpolated."""
    run_connect(model_a, model_b, data, out, modes=mode, alphas=alphas, split=split, limit=limit,
                batch_size=batch_size, seq_len=seq_len, bn_reset=bn_reset, bn_split=bn_split, bn_limit=bn_limit,
                match=match, readout_from_b=readout_from_b, random_seeds=random_seeds, filter_normalised=filter_norm,
                device=device, seed=seed, data_dir=data_dir, progress=progress)
    typer.echo(f"wrote {out}/results.json")
