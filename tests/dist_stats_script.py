"""Run under `accelerate launch --num_processes 2`: shard a fixed dataset by index, accumulate, all-reduce.

Each process keeps rows i with i % world == rank (no dataloader padding/duplicates); rank 0 writes the
CKA, debiased CKA and COS matrices as JSON to argv[1]."""

import json
import sys

import torch
from accelerate import Accelerator
from fixtures import layer_features  # this script's directory (tests/) is on sys.path

from layerwise.measures.cka import LinearStats
from layerwise.measures.cosine import CosineAccumulator


def dataset() -> list[torch.Tensor]:
    """The fixed float32 features both the 2-process run and the single-process reference use."""
    return layer_features(203, (6, 6, 6, 6), seed=0, dtype=torch.float32)


def batches(feats, idx, size=16):
    for s in range(0, len(idx), size):
        yield [x[idx[s:s + size]] for x in feats]


def main(path: str) -> None:
    acc = Accelerator(cpu=True)
    feats = dataset()
    idx = torch.arange(len(feats[0]))
    idx = idx[idx % acc.num_processes == acc.process_index]
    stats = LinearStats()
    for b in batches(feats, idx):
        stats.update(b)
    stats.all_reduce(acc)
    cos = CosineAccumulator(stats.means())
    for b in batches(feats, idx):
        cos.update(b)
    cos.all_reduce(acc)
    if acc.is_main_process:
        out = {"n": stats.n, "cka": stats.cka().tolist(), "cka_debiased": stats.cka_debiased().tolist(),
               "cos": cos.result()[0].tolist()}
        with open(path, "w") as f:
            json.dump(out, f)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
