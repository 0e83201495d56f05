"""Early-exit runner performance on an aligned ViT: layer-count vs wall-clock speedup, and full-depth overhead.

    python benchmarks/early_exit.py [--model runs/evidence/cifar-aligned] [--threads 1] [--repeats 7] [--quick] [--json]

--quick: --repeats 5 --n1 32 --n64 256 unless given. The model it trains (``--steps`` 200, a few minutes on 2
  cores) is cached under the user's cache folder (``quick_gpt.cache_dir()``, never the checkout) and reused; its
  test accuracy is printed and saved with the timings, and a model that scores under twice chance is refused.
--json: after the table, print the figures as one JSON object on the last line of stdout.

Uses ``runs/evidence/cifar-aligned`` when it exists, else trains a vit-tiny (6 blocks, 192 wide) with the aligned
loss Σ_ℓ λ_ℓ CE(readout(hˡ), y), λ_ℓ = 2ℓ/(L(L+1)) for a few steps on a CIFAR-10 subset (digits upscaled if
CIFAR-10 is absent). Prints, on the same inputs and thread count:
- the plain model's time (baseline) at batch size 1 and 64;
- the runner's time at τ, its layer-count speedup Σ L·mᵢ / Σ i·mᵢ and wall-clock speedup t_full / t_runner,
  and their ratio (targets: ≥ 0.9 at bs 1, ≥ 0.75 at bs 64 with compaction);
- the full-depth path (τ = 1.0, nobody exits) against the plain model (target: overhead ≤ 5%).
Timings: warm-up, then configurations interleaved per repeat (steadier on a shared machine), median.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from layerwise.checkpoints import load_model, save_model
from layerwise.data import load_dataset, make_loader, materialize, model_inputs
from layerwise.evaluation import layer_logits
from layerwise.inference import ConfidencePolicy, EarlyExitRunner, calibration_grid, interleaved, layer_speedup, simulate


def train_aligned(bundle, steps: int, batch_size: int = 64, lr: float = 2e-3) -> str:
    """``steps`` AdamW steps of the aligned loss, linear warm-up over 20 steps then cosine decay to 0."""
    try:
        ds = load_dataset("cifar10", "train", limit=steps * batch_size)
    except Exception:  # no CIFAR-10 here: upscaled digits keep the same model shape and cost
        ds = load_dataset("digits", "train")
        ds.images = F.interpolate(ds.images, size=32).repeat(1, 3, 1, 1)
    stack, L = bundle.stack, bundle.stack.num_layers
    opt = torch.optim.AdamW(bundle.model.parameters(), lr=lr, weight_decay=0.05)
    bundle.model.train()
    step = 0
    while step < steps:
        for batch in make_loader(ds, bundle.inputs, batch_size, shuffle=True, seed=step):
            y = batch.pop("labels")
            loss = sum(2 * ell / (L * (L + 1)) * F.cross_entropy(stack.readout(s.h), y)
                       for ell, s in enumerate(list(stack.states(batch))[1:], start=1))
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    bundle.model.eval()
    return f"vit-tiny trained here: {steps} aligned steps on {ds.name}"


def test_batches(bundle, n: int, batch_size: int):
    try:
        ds = load_dataset("cifar10", "test", limit=n)
    except Exception:
        ds = load_dataset("digits", "test", limit=n)
        ds.images = F.interpolate(ds.images, size=32).repeat(1, 3, 1, 1)
    return materialize(make_loader(ds, bundle.inputs, batch_size), "cpu")



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/evidence/cifar-aligned")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200, help="training steps when the model must be trained here")
    ap.add_argument("--threshold", type=float, default=None, help="default: the τ giving ~2× layer speedup")
    ap.add_argument("--save", default=None, help="save the model trained here to this directory")
    ap.add_argument("--n1", type=int, default=64, help="samples timed at batch size 1")
    ap.add_argument("--n64", type=int, default=1024, help="samples timed at batch size 64")
    ap.add_argument("--quick", action="store_true", help="smoke test: --repeats 5 --n1 32 --n64 256 unless given")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    args = ap.parse_args()
    if args.quick:
        ap.set_defaults(repeats=5, n1=32, n64=256)
        args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if Path(args.model).is_dir():
        bundle, source = load_model(args.model), f"loaded {args.model}"
        bundle.model.eval()
    else:
        from quick_gpt import cache_dir

        cached = cache_dir() / f"early-exit-vit-tiny-{args.steps}"
        if (cached / "source.txt").is_file():
            bundle, source = load_model(cached), (cached / "source.txt").read_text() + f", cached in {cached}"
        else:
            bundle = load_model("vit-tiny", num_classes=10)
            source = train_aligned(bundle, args.steps)
            save_model(bundle, cached)
            (cached / "source.txt").write_text(source)
        bundle.model.eval()
        if args.save:
            save_model(bundle, args.save)
    stack, model, L = bundle.stack, bundle.model, bundle.stack.num_layers
    b64 = test_batches(bundle, args.n64, 64)
    b1 = [{k: v[i:i + 1] for k, v in b.items()} for b in b64 for i in range(len(b["labels"]))][: args.n1]
    logits = layer_logits(stack, b64, bundle.exit_heads)
    labels = torch.cat([b["labels"] for b in b64])
    tau = args.threshold
    if tau is None:  # the grid value whose layer speedup is closest to 2×
        grid = [round(t, 3) for t in calibration_grid(ConfidencePolicy(0.5), logits, 41)]
        tau = min(grid, key=lambda t: abs(layer_speedup(simulate(ConfidencePolicy(t), logits).histogram(L)) - 2))
    acc = (logits[-1].argmax(-1) == labels).float().mean().item()
    chance = 1 / logits.shape[-1]
    print(f"model: {source}; L={L}; threads={args.threads}; repeats={args.repeats} (median); "
          f"accuracy (layer L) on {len(labels)} test images: {acc:.3f} (chance {chance:.3f})")
    if acc < 2 * chance:
        sys.exit(f"error: the model scores {acc:.3f}, under twice chance ({2 * chance:.2f}): its exit timings would "
                 "measure nothing; train it longer (--steps)")
    print(f"policy: max softmax ≥ τ = {tau}\n")

    def plain(batches):
        def run():
            with torch.inference_mode():
                for b in batches:
                    model(**model_inputs(b))
        return run

    header = f"{'batch':>5} {'samples':>7} {'full s':>8} {'exit s':>8} {'layer×':>7} {'wall×':>7} {'wall/layer':>10} {'target':>6}"
    print(header)
    figures = {"model": source, "L": L, "threads": args.threads, "repeats": args.repeats, "test_images": len(labels),
               "accuracy": acc, "chance_accuracy": chance, "tau": tau}
    for bs, batches, target in ((1, b1, 0.9), (64, b64, 0.75)):
        runner = EarlyExitRunner(stack, ConfidencePolicy(tau), bundle.exit_heads)
        never = EarlyExitRunner(stack, ConfidencePolicy(1.0), bundle.exit_heads)
        fns = {"full": plain(batches), "exit": lambda r=runner, b=batches: r.run(b),
               "never": lambda r=never, b=batches: r.run(b)}
        if bs > 1:
            flat = EarlyExitRunner(stack, ConfidencePolicy(tau), bundle.exit_heads, compact=False)
            fns["nocompact"] = lambda r=flat, b=batches: r.run(b)
        t = interleaved(fns, args.repeats)
        hist = runner.run(batches).histogram(L)
        s_layer, s_wall = layer_speedup(hist), t["full"] / t["exit"]
        n = sum(hist)
        print(f"{bs:>5} {n:>7} {t['full']:>8.3f} {t['exit']:>8.3f} {s_layer:>7.2f} {s_wall:>7.2f} "
              f"{s_wall / s_layer:>10.2f} {'≥' + str(target):>6}  {'PASS' if s_wall / s_layer >= target else 'MISS'}"
              f"   exits per layer {hist}")
        never_hist = never.run(batches).histogram(L)
        overhead = t["never"] / t["full"] - 1
        print(f"{'':>5} full-depth path (τ=1.0, exits {never_hist}): {t['never']:.3f}s vs plain {t['full']:.3f}s "
              f"→ overhead {100 * overhead:+.1f}% (target ≤ 5%: {'PASS' if overhead <= 0.05 else 'MISS'})")
        row = figures[f"batch {bs}"] = {"samples": n, "times_s": t, "layer_speedup": s_layer, "wall_speedup": s_wall,
                                        "wall/layer": s_wall / s_layer, "target": target,
                                        "full_depth_overhead": overhead, "exits_per_layer": hist}
        if "nocompact" in t:
            print(f"{'':>5} without compaction: {t['nocompact']:.3f}s → wall {t['full'] / t['nocompact']:.2f}×")
            row["wall_speedup_nocompact"] = t["full"] / t["nocompact"]
    if args.json:
        from quick_gpt import dumps

        print(dumps(figures))


if __name__ == "__main__":
    main()
