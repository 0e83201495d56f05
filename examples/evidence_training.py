"""Evidence on real data: the same CPU budget for each objective, then per-layer accuracy and COS tables.

    LAYERWISE_DATA=/work/shared/data OMP_NUM_THREADS=2 python examples/evidence_training.py [--only NAME ...]
    python examples/evidence_training.py --tables-only

CIFAR-10: a vit-tiny (6 blocks, 192 wide, 8×8 patches) from scratch on a seeded 20k-image train subset,
6 epochs, augmentation on, evaluated on 2k test images; standard, aligned (alternating), multi-exit, cos-reg,
and a 3-block standard model. SST-2: the packaged MiniLM fine-tuned on 12k train sentences (1 epoch),
evaluated on the 872 dev sentences.
Budgets are sized for a shared 2-core CPU (a few minutes per run), far below the paper's.
COS: each layer's pooled features (the model's own token, raw residual stream) centred by their mean
over samples, then the mean per-sample cosine to the last layer (``layerwise.measures.cosine``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from layerwise.training import resolve_config, train

OUT = Path("runs/evidence")
# A vit-tiny with 8×8 patches (17 tokens): 4× cheaper per image than 4×4 patches, so the CPU budget buys
# 6 epochs of 20k images. Every CIFAR run starts from the same saved initialisation.
INIT = OUT / "init-vit-p8"
CIFAR = dict(model=str(INIT), data="cifar10", limit=20000, eval_limit=2000, epochs=6, batch_size=64, lr=1e-3,
             weight_decay=1e-4, schedule="cosine", warmup_steps=100, augment=True, checkpoint_every=200, seed=0)
SST2 = dict(model="minilm", data="sst2", limit=12000, eval_split="dev", epochs=1, batch_size=32, lr=8e-5,
            weight_decay=0.01, max_length=64, warmup_steps=40, checkpoint_every=100, seed=0)
RUNS = {
    "cifar-standard": {**CIFAR, "objective": "standard"},
    "cifar-aligned": {**CIFAR, "objective": "aligned"},
    "sst2-standard": {**SST2, "objective": "standard"},
    "sst2-aligned": {**SST2, "objective": "aligned"},
    "cifar-multi-exit": {**CIFAR, "objective": "multi-exit"},
    "cifar-cos-reg": {**CIFAR, "objective": "cos-reg"},
    "cifar-standard-d3": {**CIFAR, "objective": "standard", "depth": 3},
}
COS_SAMPLES = 1000  # COS on the first 1000 evaluation examples (one extra forward pass per model)


@torch.no_grad()
def cos_to_last(run: str) -> list[float]:
    """COS(ℓ, L) for ℓ = 0..L of a saved run, on its evaluation data."""
    from layerwise.checkpoints import load_model
    from layerwise.data import load_dataset, make_loader
    from layerwise.evaluation import capture

    cfg = RUNS[run]
    bundle = load_model(str(OUT / run))
    ds = load_dataset(cfg["data"], cfg.get("eval_split", "test"), limit=min(cfg["eval_limit"] if "eval_limit" in cfg
                                                                             else COS_SAMPLES, COS_SAMPLES), seed=0)
    feats: list[list[torch.Tensor]] = []
    for batch in capture(bundle.stack, make_loader(ds, bundle.inputs, 100), progress=False):
        for i, f in enumerate(batch.features()):
            (feats.append([]) if len(feats) <= i else None)
            feats[i].append(f.float())
    feats = [torch.cat(f) for f in feats]
    try:
        from layerwise.measures.cosine import cosine_matrix

        return [float(x) for x in cosine_matrix(feats)[0][:, -1]]
    except ImportError:  # the measures package is optional here: same formula, directly
        cs = [f.double() - f.double().mean(0) for f in feats]
        last = torch.nn.functional.normalize(cs[-1], dim=1)
        return [float((torch.nn.functional.normalize(c, dim=1) * last).sum(1).mean()) for c in cs]


def table(runs: list[str], title: str) -> str:
    done = [r for r in runs if (OUT / r / "metrics.json").exists()]
    if not done:
        return f"### {title}\n\n(no finished runs)\n"
    rows, width = [], 0
    for r in done:
        m = json.loads((OUT / r / "metrics.json").read_text())
        cos = cos_to_last(r)
        width = max(width, len(m["accuracy"]))
        rows.append((r, m, cos))
    head = "| run | metric | " + " | ".join(f"L{i}" for i in range(width)) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (width + 2)]
    for r, m, cos in rows:
        lines.append(f"| {r} | acc | " + " | ".join(f"{a:.3f}" for a in m["accuracy"]) + " |")
        lines.append(f"| {r} | COS→L | " + " | ".join(f"{c:.3f}" for c in cos) + " |")
        if "exit_accuracy" in m:
            lines.append(f"| {r} | own-exit acc | – | " + " | ".join(f"{a:.3f}" for a in m["exit_accuracy"]) + " |")
    return "\n".join(lines) + "\n"


def write_tables() -> None:
    md = ["# Training evidence (CPU budget)", "", __doc__.split("\n\n", 2)[2].strip(), "",
          "acc = accuracy of the model's own (shared) readout after layer ℓ (L0 = embeddings); COS→L as above; "
          "own-exit acc = the multi-exit model's per-layer heads. COS at L0 of the ViTs is undefined (nan): the [CLS] "
          "token before any block is the same for every image, so its centred feature is zero.", "",
          table([r for r in RUNS if r.startswith("cifar")], "CIFAR-10, vit-tiny, 2k test images"), "",
          table([r for r in RUNS if r.startswith("sst2")], "SST-2 dev (872), MiniLM")]
    (OUT / "training_tables.md").write_text("\n".join(md))
    print((OUT / "training_tables.md").read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--tables-only", action="store_true")
    a = p.parse_args()
    if not INIT.exists():
        from layerwise.models import ViT, ViTConfig
        from layerwise.stack import LayerStack
        from layerwise.checkpoints import ModelBundle, load_model, save_model

        torch.manual_seed(0)
        model = ViT(ViTConfig(patch_size=8, dim=192, depth=6, heads=3))
        save_model(ModelBundle("vit-tiny-p8", model, LayerStack(model), load_model("vit-tiny").inputs), INIT)
    if not a.tables_only:
        for name in a.only or RUNS:
            if (OUT / name / "metrics.json").exists():
                continue  # finished already (a killed run resumes from its checkpoint)
            print(f"== {name}", flush=True)
            train(resolve_config(**RUNS[name], out=str(OUT / name), progress=False))
    write_tables()


if __name__ == "__main__":
    main()
