"""Training cost of LoRA aligned fine-tuning: full aligned vs LoRA aligned vs LoRA aligned + LayerSkip layer dropout.

    python benchmarks/peft_training.py --model DIR [--steps 20] [--warmup 2] [--quick] [--json]

DIR: a trained own GPT folder (the evidence uses the 8×256 GPT pretrained by ``examples/evidence_gpt.sh``), trained
here on WikiText-2 valid.txt blocks of 128 tokens, batch 16, as the evidence fine-tunes are.
--quick: 4 timed steps after 1 warm-up (flags given explicitly still win).
--json: after the table, print the figures as one JSON object on the last line of stdout.

Per mode: trainable parameters (each shared tensor once), the median step time over ``--steps`` timed steps with
the modes interleaved step by step (so a shared machine's load drifts equally over all of them), and the peak
memory of training: on GPU ``torch.cuda.max_memory_allocated``; on CPU the peak RSS (``ru_maxrss``) of a fresh
subprocess per mode minus its RSS (psutil) just before the first step, i.e. what the training steps add on top of
the model, data and optimizer set-up, plus the optimizer's state (allocated lazily by the first step, so it is in
the delta). Analytic parts printed beside it: the weights' gradients and AdamW's two moments, 3 × 4 bytes per
trainable parameter, and one layer's logits of a batch, B·T·V·4 bytes (the chunked aligned loss keeps one
layer's chunk at a time; its softmax gradient doubles it).
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

MODES = {"full aligned": {}, "LoRA aligned": {"peft": "lora"},
         "LoRA aligned + layer dropout": {"peft": "lora", "layer_dropout": 0.2}}


def setup(mode: str, model: str, batch_size: int, lora_r: int):
    from layerwise.training import Trainer, resolve_config
    from layerwise.training.lora import trainable_parameters

    torch.manual_seed(0)
    extra = dict(MODES[mode], lora_r=lora_r) if "peft" in MODES[mode] else MODES[mode]
    cfg = resolve_config(model=model, data="wikitext2", train_split="valid", eval_split="test", objective="aligned",
                         batch_size=batch_size, seq_len=128, epochs=1, eval_limit=1, lr=1e-3, progress=False,
                         cpu=not torch.cuda.is_available(), out=tempfile.mkdtemp(prefix="bench-peft-"), **extra)
    trainer = Trainer(cfg)
    it = iter(trainer._epoch_loader(0))
    batches = [{k: v.to(trainer.accelerator.device) for k, v in next(it).items()} for _ in range(2)]
    return trainer, batches, trainable_parameters(trainer.module)


def memory(mode: str, model: str, batch_size: int, lora_r: int, steps: int = 3) -> float:
    """Peak memory added by ``steps`` training steps of ``mode`` (optimizer state included), in MiB."""
    trainer, batches, _ = setup(mode, model, batch_size, lora_r)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import psutil

        base = psutil.Process().memory_info().rss
    for i in range(steps):
        trainer.step([batches[i % 2]])
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return (peak - base) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained own GPT folder")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="smoke test: --steps 4 --warmup 1 unless given")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    p.add_argument("--memory-mode", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        p.set_defaults(steps=4, warmup=1)
        a = p.parse_args()
    if a.memory_mode:
        print(json.dumps({"mib": memory(a.memory_mode, a.model, a.batch_size, a.lora_r)}))
        return
    runs = {m: setup(m, a.model, a.batch_size, a.lora_r) for m in MODES}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(a.warmup + a.steps):
        for m, (trainer, batches, _) in runs.items():
            t = time.perf_counter()
            trainer.step([batches[i % 2]])
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i >= a.warmup:
                times[m].append(time.perf_counter() - t)
    vocab = runs["full aligned"][0].stack.readout.head.weight.shape[0]
    params = {m: run[2] for m, run in runs.items()}
    del runs  # each memory figure comes from a fresh process (ru_maxrss only grows)
    mem = {}
    for m in MODES:
        cmd = [sys.executable, __file__, "--model", a.model, "--memory-mode", m, "--batch-size", str(a.batch_size),
               "--lora-r", str(a.lora_r)]
        mem[m] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])["mib"]
    how = ("torch.cuda.max_memory_allocated" if torch.cuda.is_available()
           else "peak RSS delta (ru_maxrss − psutil RSS before step 1), fresh process per mode")
    logits_mib = a.batch_size * 128 * vocab * 4 / 2**20
    print(f"{a.model}: batch {a.batch_size}×128 tokens, vocabulary {vocab}, {torch.get_num_threads()} threads, "
          f"median of {a.steps} steps after {a.warmup} warm-up; memory: {how}")
    rows = {}
    for m in MODES:
        trainable, total = params[m]
        step_ms = statistics.median(times[m]) * 1e3
        rows[m] = {"trainable": trainable, "total": total, "trainable_fraction": trainable / total,
                   "step_ms": step_ms, "peak_mib": mem[m], "grads_and_adam_mib": 12 * trainable / 2**20}
        print(f"  {m:30s} trainable {trainable:>9,d} / {total:,d} ({100 * trainable / total:5.2f} %)   "
              f"step {step_ms:8.1f} ms   peak +{mem[m]:7.1f} MiB   (grads + AdamW {12 * trainable / 2**20:6.1f} MiB)")
    full = rows["full aligned"]
    for m in list(MODES)[1:]:
        print(f"  {m} / full: memory {rows[m]['peak_mib'] / full['peak_mib']:.3f}× (target ≤ 0.7×), "
              f"time {rows[m]['step_ms'] / full['step_ms']:.3f}×")
    print(f"  one layer's logits of a batch: {logits_mib:.0f} MiB (the chunked loss holds one layer's at a time)")
    if a.json:
        print(json.dumps({"model": a.model, "batch_size": a.batch_size, "vocab": vocab, "steps": a.steps,
                          "warmup": a.warmup, "threads": torch.get_num_threads(), "memory": how, "modes": rows,
                          "logits_mib": logits_mib}))


if __name__ == "__main__":
    main()
