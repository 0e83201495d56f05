"""The flags of scaling out, declared once for every command that takes them (``commands.common``'s option
types): ``--log-with``, ``--device-map``, ``--offload-folder`` (half precision is the commands' ``--dtype``)."""

from __future__ import annotations

import typer

LOG_WITH = "experiment trackers: tensorboard | wandb | mlflow | trackio | all (installed ones), or a comma list " \
           "(pip install 'layerwise[trackers]'); files under OUT/trackers"
DEVICE_MAP = "place the model's blocks across devices (Accelerate big-model inference): auto | balanced | FILE.json " \
             "(module name → device, cpu or disk)"
OFFLOAD = "folder for the weights a device map offloads to disk [a temporary folder]"


def log_with_option():
    return typer.Option(None, help=LOG_WITH)


def device_map_option():
    return typer.Option(None, help=DEVICE_MAP)


def offload_option():
    return typer.Option(None, help=OFFLOAD)
