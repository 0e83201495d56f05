"""Models larger than one device: their blocks placed across devices, CPU memory and disk through Accelerate's
big-model inference (``infer_auto_device_map`` + ``dispatch_model``; ``from_pretrained(device_map=…)`` for
Hugging Face folders, ``checkpoints.hf``).

A device map names modules and their device: a GPU index (``0``) or name (``cuda:1``), ``cpu`` or ``disk``
(offloaded: the weights stay in CPU memory or in ``offload_folder`` and are loaded for each forward of their
module). ``auto`` fills the GPUs in order, then CPU memory, then disk; ``balanced`` spreads the blocks evenly
over the GPUs. The stack then carries each hidden state to its block's device (``LayerStack.carry_devices``).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from layerwise.errors import LayerwiseError

NAMED_MAPS = ("auto", "balanced")
DEVICE = re.compile(r"^(cpu|disk|mps|cuda(:\d+)?|\d+)$")
Placement = str | dict[str, int | str]


def read_device_map(spec: str) -> Placement:
    """``auto``, ``balanced`` or a JSON file mapping module names to devices (``{"blocks.3": "disk", …}``),
    checked before any weights load."""
    from layerwise import files

    if spec in NAMED_MAPS:
        return spec
    path = Path(spec)
    if path.suffix != ".json" or not path.is_file():
        raise LayerwiseError(f"`device_map` {spec!r}: pass auto, balanced or an existing .json file mapping module "
                             "names to devices", option="device_map")
    data = files.read_json(path, kind="config")
    if not isinstance(data, dict) or not data:
        raise LayerwiseError(f"`device_map` {path} must hold a JSON object of module names to devices",
                             option="device_map")
    for name, device in data.items():
        if isinstance(device, bool) or not (isinstance(device, int) and device >= 0
                                             or isinstance(device, str) and DEVICE.match(device)):
            raise LayerwiseError(f"`device_map` {path}: module {name!r} has device {device!r}; use a GPU index, "
                                 "cuda:N, mps, cpu or disk", option="device_map")
    return {name: int(d) if isinstance(d, str) and d.isdigit() else d for name, d in data.items()}


def block_classes(blocks: nn.ModuleList) -> list[str]:
    """The class names of the blocks: a device map never splits one (``no_split_module_classes``)."""
    return sorted({type(b).__name__ for b in blocks})


def infer_device_map(model: nn.Module, blocks: nn.ModuleList, kind: str,
                     max_memory: dict[Any, int | str] | None = None) -> dict[str, int | str]:
    """``auto``: Accelerate's ``infer_auto_device_map`` (GPUs in order, then CPU, then disk); ``balanced``: the
    same over ``get_balanced_memory``'s even budget per GPU."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = block_classes(blocks)
    if kind == "balanced":
        max_memory = get_balanced_memory(model, max_memory, no_split_module_classes=no_split)
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)


def check_device_map(model: nn.Module, blocks: nn.ModuleList, device_map: dict[str, int | str]) -> None:
    """Every weight placed, and no entry above a block that would need hooks the stack does not call: the
    stack runs block by block, so an entry holding several blocks must keep them on one device, in memory."""
    from accelerate.utils import check_device_map as accelerate_check

    try:
        accelerate_check(model, device_map)
    except ValueError as e:
        raise LayerwiseError(f"`device_map` places only part of the model ({str(e).splitlines()[0]}): name a "
                             "device for every module", option="device_map") from None
    names = {id(m): n for n, m in model.named_modules()}
    block_names = [names[id(b)] for b in blocks]
    devices = set(device_map.values())
    for key, device in device_map.items():
        holds = [b for b in block_names if key == "" or b.startswith(key + ".")]
        if holds and (device == "disk" or len(devices) > 1):
            raise LayerwiseError(f"`device_map` entry {key!r} holds whole blocks ({holds[0]}, …): give each block "
                                 "its own entry", option="device_map")


def dispatch(model: nn.Module, blocks: nn.ModuleList, placement: Placement,
             offload_folder: str | Path | None = None) -> dict[str, int | str]:
    """Place a loaded model by ``placement`` (``dispatch_model``); the device map used. Weights offloaded to
    ``disk`` go to ``offload_folder`` (a new temporary folder when None)."""
    from accelerate import dispatch_model

    device_map = infer_device_map(model, blocks, placement) if isinstance(placement, str) else dict(placement)
    check_device_map(model, blocks, device_map)
    folder = None
    if "disk" in device_map.values():
        folder = str(offload_folder or tempfile.mkdtemp(prefix="layerwise-offload-"))
    dispatch_model(model, device_map, offload_dir=folder, force_hooks=True)
    return device_map


def spread_blocks(model: nn.Module, blocks: nn.ModuleList, devices: list[int | str]) -> dict[str, int | str]:
    """A device map putting consecutive runs of blocks on ``devices`` in order (as evenly as they divide) and
    everything outside the blocks (embeddings, final norm, head) on ``devices[0]``: write it to a JSON file to
    start from, e.g. ``spread_blocks(model, stack.blocks, [0, 1, "cpu", "disk"])``."""
    names = {id(m): n for n, m in model.named_modules()}
    block_names = [names[id(b)] for b in blocks]
    placement = {b: devices[i * len(devices) // len(block_names)] for i, b in enumerate(block_names)}
    for name, _ in model.named_modules():  # parents before children: a placed parent takes its children along
        above = name == "" or any(b.startswith(name + ".") for b in block_names)
        if not above and not any(name == k or name.startswith(k + ".") for k in placement):
            placement[name] = devices[0]
    return placement
