"""The flags of scaling out, declared once for every command that takes them (``commands.common``'s option
types): ``--log-with``, ``--device-map``, ``--offload-folder``, ``--forward-dtype``."""

from __future__ import annotations

import typer

LOG_WITH = "experiment trackers: tensorboard | wandb | mlflow | trackio | all (installed ones), or a comma list " \
           "(pip install 'layerwise[trackers]'); files under OUT/trackers"
DEVICE_MAP = "place the model's blocks across devices (Accelerate big-model inference): auto | balanced | FILE.json " \
             "(module name → device, cpu or disk)"
OFFLOAD = "folder for the weights a device map offloads to disk [a temporary folder]"
FORWARD_DTYPE = "forward pass precision, accumulators stay float64: float32 | bf16 | fp16 (warns with the largest " \
                "difference against float32 on a small subset)"


def log_with_option():
    return typer.Option(None, help=LOG_WITH)


def device_map_option():
    return typer.Option(None, help=DEVICE_MAP)


def offload_option():
    return typer.Option(None, help=OFFLOAD)


def forward_dtype_option():
    return typer.Option("float32", help=FORWARD_DTYPE)
