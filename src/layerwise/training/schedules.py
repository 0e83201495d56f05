"""Optimizer, learning-rate schedules and the replayable data order."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Full batches of a permutation of range(n) drawn from a generator seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    return [order[i * batch_size:(i + 1) * batch_size].tolist() for i in range(n // batch_size)]


def shard(batches: Sequence[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's contiguous slice of every global batch (equal sizes, so DDP's mean is the global mean)."""
    return [b[rank * len(b) // world:(rank + 1) * len(b) // world] for b in batches]


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0,
                   milestones: Sequence[int] = (), gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up (lr·(s+1)/(w+1)) then constant, cosine to 0, or ×gamma at each milestone (in steps)."""
    from torch.optim import lr_scheduler as S

    rest = max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=rest)
    elif schedule == "multistep":
        # Milestones count from the start of training; the main scheduler starts after the warm-up.
        main = S.MultiStepLR(optimizer, [max(1, m - warmup_steps) for m in milestones], gamma=gamma)
    else:
        main = S.LambdaLR(optimizer, lambda _: 1.0)
    if warmup_steps <= 0:
        return main
    warm = S.LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps)
    return S.SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


def make_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; as nanoGPT, matrices decay and biases/norm gains do not."""
    params = [p for p in dict.fromkeys(module.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=lr)
