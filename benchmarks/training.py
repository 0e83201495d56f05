"""Training cost: aligned vs standard, and the trainer vs a bare PyTorch loop.

    python benchmarks/training.py [--steps 30] [--warmup 3] [--batch-size 64] [--quick] [--json]

--quick: 10 timed steps after 2 warm-up (flags given explicitly still win), about a minute on 2 cores.
--json: after the table, print the figures as one JSON object on the last line of stdout.

vit-tiny on random 32×32 images. Step times are medians over ``--steps`` timed steps after warm-up,
with the modes interleaved step by step so a shared machine's load drifts equally over all of them.
Peak memory: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the peak RSS (``ru_maxrss``) of a fresh
subprocess per mode minus its RSS (psutil) just before the first step, i.e. what training adds on top
of the model, optimizer and batches.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from layerwise.data import LayerwiseDataset
from layerwise.training import Trainer, make_optimizer, resolve_config

MODES = ("standard", "aligned-joint", "aligned", "bare")


def setup(mode: str, batch_size: int, n_batches: int, device: str):
    """A step function for ``mode`` and its batches (same seed, model and data for every mode)."""
    torch.manual_seed(0)
    images = torch.rand(batch_size * n_batches, 3, 32, 32)
    labels = torch.randint(0, 10, (len(images),))
    ds = LayerwiseDataset("random", "image", images=images, labels=labels, class_names=[str(i) for i in range(10)])
    cfg = resolve_config(model="vit-tiny", objective="standard" if mode == "bare" else mode, batch_size=batch_size,
                         epochs=1, out=tempfile.mkdtemp(prefix="bench-"), progress=False, cpu=device == "cpu")
    trainer = Trainer(cfg, train_ds=ds, eval_ds=ds)
    loader = trainer._epoch_loader(0)
    batches = [{k: v.to(trainer.accelerator.device) for k, v in b.items()} for b in loader][:n_batches]
    if mode != "bare":
        return lambda b: trainer.step([b]), batches
    model = trainer.bundle.model.to(trainer.accelerator.device)  # a fresh optimizer on the same architecture
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)

    def bare(b):
        loss = F.cross_entropy(model(pixel_values=b["pixel_values"]), b["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return bare, batches


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timing(steps: int, warmup: int, batch_size: int, device: str) -> dict[str, float]:
    runs = {m: setup(m, batch_size, 4, device) for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(warmup + steps):
        for m in MODES:
            step, batches = runs[m]
            sync(device)
            t = time.perf_counter()
            step(batches[i % len(batches)])
            sync(device)
            if i >= warmup:
                times[m].append(time.perf_counter() - t)
    return {m: statistics.median(v) for m, v in times.items()}


def memory(mode: str, steps: int, batch_size: int, device: str) -> float:
    """Peak memory added by ``steps`` training steps of ``mode``, in MiB."""
    step, batches = setup(mode, batch_size, 2, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import psutil

        base = psutil.Process().memory_info().rss
    for i in range(steps):
        step(batches[i % len(batches)])
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (peak - base) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="smoke test: --steps 10 --warmup 2 unless given")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    p.add_argument("--memory-mode", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        p.set_defaults(steps=10, warmup=2)
        a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.memory_mode:
        print(json.dumps({"mib": memory(a.memory_mode, 3, a.batch_size, device)}))
        return
    t = timing(a.steps, a.warmup, a.batch_size, device)
    mem = {}
    for m in ("standard", "aligned-joint", "aligned"):
        if device == "cuda":
            mem[m] = memory(m, 3, a.batch_size, device)
        else:  # ru_maxrss only grows: one fresh process per mode
            out = subprocess.run([sys.executable, __file__, "--memory-mode", m, "--batch-size", str(a.batch_size)],
                                 capture_output=True, text=True, check=True).stdout
            mem[m] = json.loads(out.strip().splitlines()[-1])["mib"]
    how = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS delta (ru_maxrss − psutil RSS before step 1)"
    print(f"vit-tiny, batch {a.batch_size}, {device} ({torch.get_num_threads()} threads), median of {a.steps} steps "
          f"after {a.warmup} warm-up")
    for m in MODES:
        print(f"  {m:14s} step {t[m] * 1e3:8.1f} ms" + (f"   peak +{mem[m]:7.1f} MiB" if m in mem else ""))
    tj, mj = t["aligned-joint"] / t["standard"], mem["aligned-joint"] / mem["standard"]
    ta, ma = t["aligned"] / t["standard"], mem["aligned"] / mem["standard"]
    tb = t["standard"] / t["bare"]
    print(f"aligned-joint / standard: time {tj:.3f}×, memory {mj:.3f}×   (target ≤ 1.15×)")
    print(f"aligned (alternating) / standard: time {ta:.3f}×, memory {ma:.3f}×")
    print(f"trainer standard / bare PyTorch loop: time {tb:.3f}× (overhead {100 * (tb - 1):+.1f}%, target ≤ +5%); "
          f"memory: {how}")
    if a.json:
        print(json.dumps({"device": device, "threads": torch.get_num_threads(), "batch_size": a.batch_size,
                          "steps": a.steps, "warmup": a.warmup, "step_ms": {m: t[m] * 1e3 for m in MODES},
                          "peak_mib": mem, "memory": how,
                          "ratios": {"aligned-joint/standard time": tj, "aligned-joint/standard memory": mj,
                                     "aligned/standard time": ta, "aligned/standard memory": ma,
                                     "standard/bare time": tb}}))


if __name__ == "__main__":
    main()
