"""Aligned language-model training: peak memory and step time of the chunked loss against standard training.

    python benchmarks/lm_loss.py [--layers 12] [--width 768] [--vocab 50257] [--batch 2] [--seq 1024]
                                 [--steps 3] [--warmup 1] [--max-gib G] [--quick] [--json]

A random GPT-2-shaped ``GPT2LMHeadModel`` (12 blocks, 768 wide, V = 50,257, B·T = 2 × 1024 = 2,048 tokens by
default) trained through the trainer's ``ObjectiveModule`` with AdamW; one step = forward, backward,
optimizer step. Variants:

- ``standard``: the last layer's CE on full logits (``lm_loss="naive"``, what standard training does);
- ``aligned-naive``: Σ_ℓ λ_ℓ CE_ℓ with every layer's full logits (``losses.layer_losses``);
- ``aligned-chunked``: the same loss with ``training/lm_loss.py`` (the trainer's default for LMs);
- ``standard-chunked``: the last layer's CE through ``lm_loss.py`` (for reference);
- ``aligned-sampled``: the layer-sampled aligned loss (``aligned_layers=1``: the last layer and one drawn layer a
  step, importance-weighted so that its expectation is the aligned loss; ``lm_loss.sampled_layer_weights``);
- ``aligned-checkpoint``: the alternative design, for comparison: the same chunks, each chunk's readout + CE
  under ``torch.utils.checkpoint`` (logits recomputed in the backward pass: four head products per layer
  instead of three).

Each variant runs in a fresh subprocess (one after the other, so they do not share the machine). Step time:
median of ``--steps`` steps after ``--warmup``, in that subprocess, or with ``--interleave`` measured again in
one process with the variants stepped in turn (fairer on a machine whose load changes). Peak memory:
``torch.cuda.max_memory_allocated`` on GPU; on
CPU the peak RSS of the subprocess (``ru_maxrss``: model, gradients, AdamW state, activations, the Python
runtime), and the same minus the RSS just before the first step ("added by training"). ``--max-gib`` caps
a subprocess's address space (CPU) so that a variant too large for the machine fails alone; it is then
reported as not fitting. ``--quick``: 4 blocks, 256 wide, V = 8,192, 2 × 256 tokens, 2 steps after 1.
``--json``: the figures as one JSON object, last on stdout (non-finite numbers as null). ``memory_ratio`` /
``time_ratio`` are aligned-chunked over standard, ``sampled_memory_ratio`` / ``sampled_time_ratio``
aligned-sampled over standard.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("standard", "aligned-naive", "aligned-chunked", "aligned-sampled", "standard-chunked",
            "aligned-checkpoint")
QUICK = {"layers": 4, "width": 256, "vocab": 8192, "batch": 2, "seq": 256, "steps": 2, "warmup": 1}


def checkpointed_module(base: type) -> type:
    """``ObjectiveModule`` whose Σ_ℓ w_ℓ CE_ℓ checkpoints each chunk's readout + CE (recomputed in backward)."""
    from torch.utils.checkpoint import checkpoint

    from layerwise.training.lm_loss import _ce_sum, default_chunk, next_token_rows

    class Checkpointed(base):
        def weighted_ce(self, readouts, hs, mask, labels, weights):
            b, t, y = next_token_rows(labels, mask)
            n, c, total = y.numel(), default_chunk(readouts[0].head.out_features), 0.0
            for r, h, w in zip(readouts, hs, weights.tolist()):
                for s in range(0, n, c):
                    x = h[b[s:s + c], t[s:s + c]]
                    total = total + checkpoint(lambda x_, y_, r=r: _ce_sum(r(x_), y_), x, y[s:s + c],
                                               use_reentrant=False) * (w / n)
            return total

    return Checkpointed


def setup(a: argparse.Namespace, variant: str, device: str):
    """The module, optimizer and one batch of random tokens (same seed for every variant)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from layerwise.stack import LayerStack
    from layerwise.training import make_optimizer
    from layerwise.training.objectives import ObjectiveModule, layer_weights

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=a.layers, n_embd=a.width, n_head=max(1, a.width // 64), vocab_size=a.vocab,
                     n_positions=a.seq, bos_token_id=a.vocab - 1, eos_token_id=a.vocab - 1)
    model = GPT2LMHeadModel(cfg).to(device).train()
    stack = LayerStack(model)
    cls = checkpointed_module(ObjectiveModule) if variant == "aligned-checkpoint" else ObjectiveModule
    module = cls(stack, None, layer_weights(a.layers), 1.0,
                 lm_loss="naive" if variant.endswith("naive") or variant == "standard" else "chunked",
                 aligned_layers=1 if variant == "aligned-sampled" else None).to(device)
    opt = make_optimizer(module, 1e-4, 0.0)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    phase = "standard" if variant.startswith("standard") else "aligned"

    def step() -> float:
        loss = module(batch, phase)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_variant(a: argparse.Namespace, variant: str, device: str) -> dict[str, float]:
    """Step times and peak memory of one variant, in this process."""
    step = setup(a, variant, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import psutil

        base = psutil.Process().memory_info().rss
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        sync(device)
        t = time.perf_counter()
        losses.append(step())
        sync(device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"step_s": statistics.median(times), "peak_mib": peak / 2**20, "added_mib": (peak - base) / 2**20,
            "first_loss": losses[0]}


def interleaved_times(a: argparse.Namespace, variants: list[str], device: str) -> dict[str, float]:
    """Median step time of each variant, all built in this process and stepped in turn (variant by variant
    within each step), so a shared machine's changing load falls on all of them alike."""
    steps = {v: setup(a, v, device) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(a.warmup + a.steps):
        for v in variants:
            sync(device)
            t = time.perf_counter()
            steps[v]()
            sync(device)
            if i >= a.warmup:
                times[v].append(time.perf_counter() - t)
    return {v: statistics.median(x) for v, x in times.items()}


def spawn(a: argparse.Namespace, variant: str) -> dict[str, float] | None:
    """``run_variant`` in a fresh process (None when it ran out of memory under ``--max-gib``)."""
    args = [sys.executable, __file__, "--variant", variant] + [f"--{k}={getattr(a, k)}" for k in QUICK]
    if a.max_gib:
        args.append(f"--max-gib={a.max_gib}")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if "alloc" in done.stderr or "memory" in done.stderr.lower():
            return None
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio(r: dict, key: str, over: str = "standard") -> float | None:
    return None if r.get(key) is None else r[key] / r[over]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-gib", type=float, default=None, help="CPU: address-space cap per variant, GiB")
    p.add_argument("--interleave", action="store_true",
                   help="time all variants in one process, in turn step by step (memory still one process each)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list, a subset of " + ",".join(VARIANTS))
    p.add_argument("--quick", action="store_true", help="smoke test: a small model (flags given explicitly still win)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        p.set_defaults(**QUICK)
        a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.variant:  # a child: measure one variant
        if a.max_gib and device == "cpu":
            cap = int(a.max_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(run_variant(a, a.variant, device)))
        return
    variants = [v for v in a.variants.split(",") if v]
    res = {v: run_variant(a, v, device) if device == "cuda" else spawn(a, v) for v in variants}
    if a.interleave:  # step times from one process, variants in turn; memory stays per process
        for v, s in interleaved_times(a, [v for v in variants if res[v] is not None], device).items():
            res[v]["step_s"] = s
    how = ("torch.cuda.max_memory_allocated" if device == "cuda"
           else "peak RSS of a fresh process per variant (ru_maxrss); 'added': minus the RSS before step 1")
    tokens = a.batch * a.seq
    print(f"GPT-2-shaped: {a.layers} blocks, {a.width} wide, V = {a.vocab:,}, {a.batch}×{a.seq} = {tokens:,} tokens; "
          f"{device} ({torch.get_num_threads()} threads); median of {a.steps} steps after {a.warmup} warm-up"
          + (", timed interleaved in one process" if a.interleave else ""))
    std = res.get("standard")
    for v in variants:
        r = res[v]
        if r is None:
            print(f"  {v:17s} did not fit under --max-gib {a.max_gib}")
            continue
        rel = "" if std is None else (
            f"   time {r['step_s'] / std['step_s']:.2f}×, memory {r['peak_mib'] / std['peak_mib']:.2f}× "
            f"(added {r['added_mib'] / std['added_mib']:.2f}×)")
        print(f"  {v:17s} step {r['step_s']:8.2f} s   peak {r['peak_mib']:8.0f} MiB (added {r['added_mib']:7.0f}){rel}")
    out: dict = {"device": device, "interleaved": a.interleave, "threads": torch.get_num_threads(),
                 "layers": a.layers, "width": a.width, "vocab": a.vocab, "batch": a.batch, "seq": a.seq, "tokens": tokens, "steps": a.steps,
                 "warmup": a.warmup, "memory": how, "max_gib": a.max_gib, "variants": res}
    if std is not None:
        for v, key in (("aligned-chunked", ""), ("aligned-naive", "naive_"), ("standard-chunked", "standard_chunked_"),
                       ("aligned-checkpoint", "checkpoint_"), ("aligned-sampled", "sampled_")):
            if v not in res:
                continue
            r = res[v]
            out[f"{key}memory_ratio"] = None if r is None else r["peak_mib"] / std["peak_mib"]
            out[f"{key}added_memory_ratio"] = None if r is None else r["added_mib"] / std["added_mib"]
            out[f"{key}time_ratio"] = None if r is None else r["step_s"] / std["step_s"]
        m, t = out.get("memory_ratio"), out.get("time_ratio")
        if m is not None:
            print(f"aligned-chunked / standard: memory {m:.3f}× (target ≤ 1.3×), time {t:.3f}× (target ≤ 1.3×)")
        if out.get("sampled_memory_ratio") is not None:
            print(f"aligned-sampled (k = 1) / standard: memory {out['sampled_memory_ratio']:.3f}× (target ≤ 1.3×), "
                  f"time {out['sampled_time_ratio']:.3f}× (target ≤ 1.3×)")
        if out.get("naive_memory_ratio") is not None:
            print(f"aligned-naive / standard:   memory {out['naive_memory_ratio']:.3f}×, "
                  f"time {out['naive_time_ratio']:.3f}×")
    print(f"memory: {how}")
    if a.json:
        from quick_gpt import dumps

        print(dumps(out))


if __name__ == "__main__":
    main()
