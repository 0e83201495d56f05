"""The LoRA evidence table and figure (docs/lora.md) from the run folders of examples/evidence_lora.sh.

    python examples/lora_tables.py ROOT --figure docs/figures/lora/per_layer_perplexity.png

ROOT holds the fine-tunes ``standard``, ``aligned``, ``lora``, ``lora-ld`` and, where present, the learning-rate
variants ``lora-lr6e-3``, ``lora-lr1.5e-2`` (each a ``layerwise train`` run folder and
its ``NAME.log``, the output of ``/usr/bin/time -v``: the process's peak RSS). Per run: per-layer test perplexity
(``metrics.json``), the mean over the intermediate layers 1..L−1, trainable parameters (counted on the model the run
folder loads: the adapters, or every weight), the training time per optimizer step from ``log.jsonl`` (elapsed
seconds over steps, evaluation included) and the peak RSS. The gain of a run is the standard run's mean
intermediate perplexity minus its own; LoRA's share of full aligned fine-tuning's gain is their ratio.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

RUNS = {"standard": "standard fine-tuning", "aligned": "full aligned fine-tuning", "lora": "LoRA aligned",
        "lora-ld": "LoRA aligned + layer dropout", "lora-lr6e-3": "LoRA aligned, lr 6e-3",
        "lora-lr1.5e-2": "LoRA aligned, lr 1.5e-2"}


def peak_rss_mib(log: Path) -> float | None:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text()) if log.exists() else None
    return int(found.group(1)) / 1024 if found else None


def trainable(run: Path) -> tuple[int, int]:
    """(trainable, total) as training saw them: adapters (LoRA) or every weight (tied tensors once)."""
    from layerwise.checkpoints import load_model

    model = load_model(str(run)).model
    params = list(dict.fromkeys(model.parameters()))
    total = sum(p.numel() for p in params)
    if (run / "adapter_config.json").exists():
        total_lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        return total_lora, total
    return total, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--figure", type=Path, required=True)
    args = ap.parse_args()
    rows = {}
    for name, label in RUNS.items():
        run = args.root / name
        if not (run / "metrics.json").exists():
            continue
        m = json.loads((run / "metrics.json").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        ppl = m["perplexity"]
        t, total = trainable(run)
        rows[name] = {"label": label, "ppl": ppl, "mid": sum(ppl[1:-1]) / len(ppl[1:-1]), "trainable": t,
                      "total": total, "step_s": log[-1]["elapsed_s"] / log[-1]["step"],
                      "peak_mib": peak_rss_mib(args.root / f"{name}.log"), "steps": m["step"]}
    std = rows.get("standard")
    full = rows.get("aligned")
    print("| run | steps | trainable weights | last-layer ppl | mean ppl, layers 1..L−1 | share of full aligned gain "
          "| peak RSS (MiB) | s / step |\n" + "| --- " * 8 + "|")
    for r in rows.values():
        share = ((std["mid"] - r["mid"]) / (std["mid"] - full["mid"]) if std and full and r is not std else None)
        print(f"| {r['label']} | {r['steps']} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %) | "
              f"{r['ppl'][-1]:.1f} | {r['mid']:.1f} | {'' if share is None else f'{100 * share:.0f} %'} | "
              f"{'' if r['peak_mib'] is None else round(r['peak_mib'])} | {r['step_s']:.1f} |")
    print("\nper-layer perplexity (layers 0..L):")
    for r in rows.values():
        print(f"  {r['label']:32s} " + " ".join(f"{p:9.1f}" for p in r["ppl"]))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for r in rows.values():
        ax.plot(range(1, len(r["ppl"])), r["ppl"][1:], marker="o", label=r["label"])
    ax.set_yscale("log")
    ax.set_xlabel("layer ℓ (readout of hˡ)")
    ax.set_ylabel("test perplexity (WikiText-2)")
    ax.set_title("8×256 GPT fine-tuned at equal steps: perplexity of every layer")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
