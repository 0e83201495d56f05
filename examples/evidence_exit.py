"""Early-exit evidence on CIFAR-10 with the runs of ``examples/evidence_training.py``.

    LAYERWISE_DATA=/work/shared/data python examples/evidence_exit.py [--root runs/evidence] [--limit 2000]

For cifar-{standard,aligned,multi-exit} (whichever exist): accuracy and speedups at the threshold calibrated for
ε = 1% accuracy drop on a validation half of the CIFAR-10 test images (seeded), reported on the other half; the
exit histograms and threshold sweeps (``layerwise exit`` report in ROOT/exit/); per-layer accuracy under a
shift (the training augmentations applied to the test half); and the minimal-depth comparison (paper Fig. 4):
the aligned 6-block model truncated to k = 3 against cifar-standard-d3 (3 blocks, same training budget).
Writes ROOT/exit_tables.md. Numbers are whatever the runs give; nothing is tuned here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from layerwise.checkpoints import load_model, truncate
from layerwise.commands import exit as exit_command
from layerwise.data import load_dataset, make_loader, materialize
from layerwise.data.load import holdout
from layerwise.evaluation import layer_logits, layerwise_accuracy
from layerwise.inference import plain_forward, timed

KINDS = ("standard", "aligned", "multi-exit")


def fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def accuracy_and_time(bundle, batches) -> tuple[float, float]:
    labels = torch.cat([b["labels"] for b in batches])
    acc = float((layer_logits(bundle.stack, batches, bundle.exit_heads)[-1].argmax(-1) == labels).float().mean())
    return acc, timed(plain_forward(bundle.model.eval(), batches), repeats=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("runs/evidence"))
    ap.add_argument("--limit", type=int, default=2000, help="CIFAR-10 test images (half validation, half test)")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--delta", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root
    present = {k: root / f"cifar-{k}" for k in KINDS if (root / f"cifar-{k}" / "config.json").exists()}
    missing = [k for k in KINDS if k not in present]
    lines = ["# Early exit on CIFAR-10 (own vit-tiny, 6 blocks)", "",
             f"Data: the first {args.limit} CIFAR-10 test images of a seeded permutation (seed 0, the training "
             "runs' evaluation images); a seeded half is the validation split for calibration, the other half the "
             f"test split every number below is reported on. Policy: max softmax ≥ τ. Device: CPU, "
             f"{args.threads} thread(s), batch size {args.batch_size}, median of {args.repeats} timings, a shared 2-core machine (timings are noisy).",
             ""]
    if missing:
        lines += [f"**Missing runs (not evaluated):** {', '.join('cifar-' + k for k in missing)}.", ""]
    reports = []
    if present:
        res = exit_command.run(exit_command.ExitOptions(
            model=[str(p) for p in present.values()], data="cifar10", out=root / "exit", threshold=args.threshold,
            limit=args.limit, batch_size=args.batch_size, calibrate_eps=args.eps, val_split="0.5", delta=args.delta,
            seed=0, device="cpu", repeats=args.repeats))
        reports = res["models"]
        lines += [f"## Calibrated threshold (ε = {args.eps:.0%} on the validation half)", "",
                  "| model | full acc | τ* | val drop | test acc | test drop | layer speedup | wall speedup | exits per layer 1..L |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for kind, r in zip(present, reports):
            c = r["calibration"]
            lines.append(f"| {kind} | {fmt(r['full_accuracy'])} | {fmt(c['threshold'], 4)} | "
                         f"{fmt(c['val_full_accuracy'] - c['val_accuracy'])} | {fmt(c['test_accuracy'])} | "
                         f"{fmt(c['test_accuracy_drop'])} | {fmt(c['test_layer_speedup'], 2)}× | "
                         f"{fmt(c['test_wall_speedup'], 2)}× | {c['test_histogram']} |")
        lines += ["", f"## Fixed threshold τ = {args.threshold}", "",
                  "| model | accuracy | drop | layer speedup | wall speedup | exits per layer 1..L |", "|---|---|---|---|---|---|"]
        for kind, r in zip(present, reports):
            lines.append(f"| {kind} | {fmt(r['accuracy'])} | {fmt(r['accuracy_drop'])} | "
                         f"{fmt(r['layer_speedup'], 2)}× | {fmt(r['wall_speedup'], 2)}× | {r['exit_histogram']} |")
        lines += ["", "## Per-layer accuracy (readout after each block; multi-exit: its own head per layer)", "",
                  "| model | " + " | ".join(f"ℓ={i}" for i in range(1, reports[0]["num_layers"] + 1)) +
                  f" | minimal depth (δ={args.delta}) |", "|---" * (reports[0]["num_layers"] + 2) + "|"]
        for kind, r in zip(present, reports):
            lines.append(f"| {kind} | " + " | ".join(fmt(a) for a in r["per_layer_accuracy"]) +
                         f" | {r['minimal_depth']['k']} |")
        lines += ["", "Figures: `exit/exit_histogram.png` (exits at τ), `exit/sweep.png` (accuracy vs layer-count "
                  "and wall-clock speedup over the τ sweep); raw numbers in `exit/results.json`.", ""]

    # Test half, exactly as the exit command split it.
    ds = load_dataset("cifar10", "test", limit=args.limit, seed=0)
    _, test_ds = holdout(ds, 0.5, seed=0)
    spec = load_model("vit-tiny").inputs

    if present:
        lines += ["## Shift: per-layer accuracy with the training augmentations on the test half", "",
                  "(random crop, flip, ±15° rotation — a mild distribution shift; paper Fig. 6)", "",
                  "| model | " + " | ".join(f"ℓ={i}" for i in range(1, 7)) + " |", "|---" * 7 + "|"]
        for kind, path in present.items():
            acc = layerwise_accuracy(load_model(str(path)), test_ds, augment=True, batch_size=args.batch_size)
            lines.append(f"| {kind} | " + " | ".join(fmt(a) for a in acc) + " |")
        lines.append("")

    # Minimal depth (paper Fig. 4): aligned truncated to 3 blocks vs a 3-block standard model.
    rows = []
    batches = materialize(make_loader(test_ds, spec, args.batch_size), "cpu")
    for label, path, k in (("aligned, 6 blocks", "aligned", None), ("aligned truncated to k=3", "aligned", 3),
                           ("standard, 6 blocks", "standard", None), ("standard truncated to k=3", "standard", 3),
                           ("standard-d3 (trained with 3 blocks)", "standard-d3", None)):
        d = root / f"cifar-{path}"
        if not (d / "config.json").exists():
            rows.append(f"| {label} | – | – | – | run cifar-{path} missing |")
            continue
        bundle = load_model(str(d))
        bundle.model.eval()
        if k is not None:
            bundle = truncate(bundle, k)
        acc, t = accuracy_and_time(bundle, batches)
        rows.append(f"| {label} | {bundle.stack.num_layers} | {fmt(acc)} | {1000 * t / len(test_ds):.2f} | |")
    lines += ["## Minimal depth: aligned truncated to 3 blocks vs standard trained with 3 blocks (same budget)", "",
              "| model | blocks | test accuracy | ms / image (plain forward) | note |", "|---|---|---|---|---|", *rows, ""]
    out = root / "exit_tables.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
