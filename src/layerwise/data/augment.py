"""Seeded image augmentation (the paper's: random crop with padding, horizontal flip, rotation)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import get_worker_info

_ROTATION_DEGREES = 15.0


def augment_images(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop (zero padding size//8), horizontal flip (p=0.5) and rotation (uniform in ±15°) per sample."""
    b, _, h, w = images.shape
    ph, pw = h // 8, w // 8
    padded = F.pad(images, (pw, pw, ph, ph))
    dy = torch.randint(0, 2 * ph + 1, (b,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pw + 1, (b,), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(_ROTATION_DEGREES)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(b)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    return F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Augmenter:
    """Seeded augmentation: one stream in the main process, one per worker seeded from the loader."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.worker_seed: int | None = None

    def __call__(self, images: Tensor) -> Tensor:
        info = get_worker_info()
        # Workers get copies of this object; reseed from their per-epoch seed so streams differ yet replay.
        if info is not None and info.seed != self.worker_seed:
            self.generator.manual_seed(info.seed)
            self.worker_seed = info.seed
        return augment_images(images, self.generator)
