"""Training job for the 1- vs 2-process equality test.

    python tests/dist_train_script.py OUT
    python -m accelerate.commands.launch --cpu --num_processes 2 ... tests/dist_train_script.py OUT
"""

import sys

import torch

from layerwise.training import resolve_config, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    train(resolve_config(model="mlp-residual", data="digits", objective="aligned", out=sys.argv[1], epochs=2,
                         batch_size=32, limit=640, lr=1e-3, schedule="cosine", warmup_steps=3, seed=3, cpu=True,
                         progress=False))
