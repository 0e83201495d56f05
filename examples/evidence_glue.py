"""Evidence for AlignedBERT (the paper's Figure 7) at a CPU budget: the packaged MiniLM fine-tuned with the
standard and the aligned (alternating) objective on four GLUE tasks, the readout on masked-mean pooling, plus
one task with [CLS] pooling; then per-layer task metrics, and Figure 3(b) (probe accuracy, NC1) for SST-2.

    LAYERWISE_DATA=/work/shared/data OMP_NUM_THREADS=1 python examples/evidence_glue.py train [--only NAME ...]
    LAYERWISE_DATA=/work/shared/data OMP_NUM_THREADS=1 python examples/evidence_glue.py analyze
    python examples/evidence_glue.py tables

Budget (a shared 2-core CPU, 1 thread, about a third of a core under the machine's load): a seeded subset of
1,000 training examples, 1 epoch (62 steps of batch 16), AdamW lr 1e-4 with 20 warm-up steps, max length 64
tokens; evaluation on a seeded subset of 500 dev examples (RTE: all 277).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

OUT = Path("runs/evidence-glue")
FIGURES = Path("docs/figures/glue")
TASKS = {"SST-2": "glue/SST-2", "CoLA": "glue/CoLA", "RTE": "glue/RTE", "STS-B": "glue/STS-B"}
COMMON = dict(model="minilm", limit=1000, eval_limit=500, eval_split="dev", epochs=1, batch_size=16, lr=1e-4,
              weight_decay=0.01, max_length=64, warmup_steps=20, seed=0, pooling="mean", progress=False)
RUNS = {f"{task.lower()}-{objective}": {**COMMON, "data": data, "objective": objective}
        for task, data in TASKS.items() for objective in ("standard", "aligned")}
RUNS["sst-2-aligned-cls"] = {**COMMON, "data": "glue/SST-2", "objective": "aligned", "pooling": "cls"}


def train_runs(only: list[str] | None) -> None:
    from layerwise.training import resolve_config, train

    for name, cfg in RUNS.items():
        if only and name not in only or (OUT / name / "metrics.json").exists():
            continue
        print(f"== {name}", flush=True)
        train(resolve_config(**{**cfg, "out": str(OUT / name)}))


def analyze_runs() -> None:
    """Figure 3(b) for SST-2: per-layer readout accuracy, probe accuracy (fitted on 1,000 training sentences)
    and NC1, on the same 500 dev sentences the runs were evaluated on."""
    from layerwise.commands.analyze import AnalyzeOptions, run

    for name in ("sst-2-aligned", "sst-2-standard"):
        out = OUT / f"analyze-{name}"
        if not (out / "results.json").exists():
            run(AnalyzeOptions(model=str(OUT / name), data="glue/SST-2", out=out, split="dev", limit=500,
                               measures="cka_linear", probe_limit=1000, device="cpu"))


def _metric(run: str) -> tuple[str, list[float]]:
    m = json.loads((OUT / run / "metrics.json").read_text())
    return m["metric"], m[m["metric"]]


def tables() -> str:
    lines = []
    for task in TASKS:
        runs = [r for r in (f"{task.lower()}-standard", f"{task.lower()}-aligned", f"{task.lower()}-standard-cls",
                            f"{task.lower()}-aligned-cls") if (OUT / r / "metrics.json").exists()]
        if not runs:
            continue
        width = len(_metric(runs[0])[1])
        lines += [f"**{task}**", "", "| run | metric | " + " | ".join(f"L{i}" for i in range(width)) + " |",
                  "|---|---|" + "---|" * width]
        for r in runs:
            name, values = _metric(r)
            label = r[len(task) + 1:].replace("-cls", ", [CLS] pooling") + ("" if r.endswith("-cls") else ", mean pooling")
            lines.append(f"| {label} | {name} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in values) + " |")
        lines.append("")
    return "\n".join(lines)


def figures() -> None:
    from matplotlib.figure import Figure

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 4)
    styles = {"standard": ("tab:blue", "-"), "aligned": ("tab:red", "-"), "standard-cls": ("tab:blue", ":"),
              "aligned-cls": ("tab:red", ":")}
    for ax, task in zip(axes, TASKS):
        ax.set(title=f"{task} (no finished run)", xlabel="layer ℓ")
        for suffix, (color, ls) in styles.items():
            run = f"{task.lower()}-{suffix}"
            if (OUT / run / "metrics.json").exists():
                name, values = _metric(run)
                label = suffix.replace("-cls", " [CLS]") + ("" if suffix.endswith("cls") else " mean")
                ax.plot(range(len(values)), [float("nan") if v is None else v for v in values], marker="o",
                        color=color, ls=ls, label=label)
                ax.set(title=f"{task} ({name})", xlabel="layer ℓ")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "figure7_minilm.png", dpi=110)
    for name in ("sst-2-standard", "sst-2-aligned"):
        src = OUT / f"analyze-{name}" / "probe_nc1.png"
        if src.exists():
            (FIGURES / f"figure3b_{name}.png").write_bytes(src.read_bytes())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=("train", "analyze", "tables"))
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("LAYERWISE_DATA", "../shared/data")
    if args.stage == "train":
        train_runs(args.only)
    elif args.stage == "analyze":
        analyze_runs()
    else:
        figures()
        print(tables())
