"""Training job for the 1- vs 2-process equality test.

    python tests/dist_train_script.py OUT
    python -m torch.distributed.run --nproc_per_node 2 ... tests/dist_train_script.py OUT

No ``cpu``: under a launcher on a machine without GPUs the trainer runs DDP over gloo by itself.
"""

import sys

import torch

from layerwise.training import resolve_config, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    train(resolve_config(model="mlp-residual", data="digits", objective="aligned", out=sys.argv[1], epochs=2,
                         batch_size=32, limit=640, lr=1e-3, schedule="cosine", warmup_steps=3, seed=3,
                         progress=False))
