"""Data-parallel passes over data, on Hugging Face Accelerate (``PartialState``, ``gather_object``, ``reduce``).

Under ``accelerate launch --num_processes N -m layerwise.cli CMD …`` (or ``torchrun --nproc_per_node N``) every
process takes one shard of the data, computes what it can alone, and then

- **reduces** exact statistics (float64 sums, counts) by summing them over the processes (``reduce_sum``);
- **gathers** per-sample outputs back into data-set order (``gather_rows``, ``gather_list``);
- leaves the run folder and the figures to **rank 0** (``open_folder``, ``rank0``).

Shards are contiguous runs of whole batches, cut as ``PartialState.split_between_processes`` cuts a list (the
first ``n mod N`` ranks take one more; a ragged last shard is fine): every batch is exactly the batch the
one-process run makes, so its forward is the same computation, and gathering in rank order is data-set order.
A list of batches may leave a process nothing (its outputs are then ``None``, skipped when gathering); a
loader pass (``shard_loader``: analyze, compare, the probe) with fewer batches than processes is refused.
``strided`` shards (rank r takes items r, r + N, …) are offered for lists whose items are independent; their
gathered outputs are put back in order by ``gather_list(…, strided=True)``.

In one process (no launcher) every function is the identity: the commands run unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from layerwise.errors import LayerwiseError

T = TypeVar("T")


def launched() -> bool:
    """Whether a launcher started several processes (``WORLD_SIZE`` > 1, as ``accelerate launch`` and
    ``torchrun`` set it). Read from the environment so that a one-process run never imports torch early."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def speaks() -> bool:
    """Whether this process prints summaries and draws progress bars: rank 0 of a launch (or the only process),
    read from ``RANK`` as launchers set it, so that asking initialises nothing."""
    return not launched() or int(os.environ.get("RANK", "0")) == 0


def quiet_other_ranks() -> None:
    """Under a launcher, ranks other than 0 print nothing on stdout (the CLI's ``wrote …`` summary would appear
    once per process); errors still reach stderr from every rank."""
    if not speaks():
        import sys

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)


def on_cpu(cpu: bool = False) -> bool:
    """Whether Accelerate must be told ``cpu``: asked for, or a launch on a machine without GPUs (Accelerate goes
    multi-process there, DDP over gloo, only with ``cpu``; else each ``torchrun`` process would run alone). Not
    for a launch configured for FSDP (``ACCELERATE_USE_FSDP``): told ``cpu``, Accelerate would quietly run DDP
    instead; left alone, each process runs alone and the trainer refuses (``training.setup``)."""
    import torch

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return cpu or (launched() and not torch.cuda.is_available() and not fsdp)


def state(cpu: bool = False):
    """Accelerate's process state (initialises the process group once under a launcher: NCCL with GPUs; gloo on
    a machine without, or with ``cpu``: ``on_cpu``). The first call in a process decides, and an ``Accelerator``
    made later reuses it: the trainer calls first with its own ``cpu`` (``training.trainer.open_train_folder``)."""
    from accelerate import PartialState

    return PartialState(cpu=on_cpu(cpu))


def world_size() -> int:
    return state().num_processes if launched() else 1


def rank() -> int:
    return state().process_index if launched() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device):
    """This process's device: under a launcher with GPUs each rank takes its own (``PartialState.device``) instead
    of the same ``cuda``; a CPU device, or one given with an index, is kept."""
    if launched() and device.type == "cuda" and device.index is None:
        return state().device
    return device


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s contiguous share of ``n`` items among ``world`` processes: the first
    ``n mod world`` ranks take ⌈n / world⌉, the others ⌊n / world⌋ (``split_between_processes``'s rule)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return start, start + per + (rank < extra)


def _check_enough(n: int) -> None:
    if n < world_size():
        raise LayerwiseError(f"{n} batch{'es' if n != 1 else ''} cannot be split over {world_size()} processes: "
                             "launch fewer processes or lower `batch_size`", option="batch_size")


def shard_list(items: Sequence[T], *, strided: bool = False) -> list[T]:
    """This rank's share of ``items`` (materialised batches, prompt batches): contiguous, or every ``world``-th
    from ``rank`` if ``strided``; empty for the last ranks when there are fewer items than processes."""
    if not launched():
        return list(items)
    if strided:
        return list(items[rank()::world_size()])
    with state().split_between_processes(list(items)) as mine:
        return list(mine)


def shard_loader(loader):
    """A loader over this rank's contiguous run of ``loader``'s batches (a ``DataLoader`` without shuffling):
    the same batches, each collated exactly as the full loader collates it. ``n_local`` holds its sample count."""
    if not launched():
        loader.n_local = len(loader.dataset)
        return loader
    from torch.utils.data import DataLoader, SequentialSampler, Subset

    if not isinstance(loader, DataLoader) or not isinstance(loader.sampler, SequentialSampler) or not loader.batch_size:
        raise LayerwiseError("a data-parallel pass needs a plain loader in order (no shuffling, fixed batch size)")
    n, size = len(loader.dataset), loader.batch_size
    _check_enough(len(loader))
    first, last = shard_bounds(len(loader), rank(), world_size())
    part = Subset(loader.dataset, range(first * size, min(last * size, n)))
    mine = DataLoader(part, batch_size=size, collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      drop_last=loader.drop_last)
    mine.n_local, mine.first_sample = len(part), first * size
    return mine


def reduce_sum(x):
    """Σ over the processes of a tensor (or nested list/dict of tensors), on the device it came from; exact
    statistics are float64 sums and counts, so the sum's order changes them only at 1e-16 relative."""
    if not launched():
        return x
    from accelerate.utils import reduce

    import torch

    def one(t: torch.Tensor) -> torch.Tensor:
        here = t.device
        with torch.inference_mode(False):  # torch < 2.5: gloo may not update an inference tensor in place
            return reduce(t.to(state().device).clone(), reduction="sum").to(here)

    if isinstance(x, torch.Tensor):
        return one(x)
    if isinstance(x, dict):
        return {k: reduce_sum(v) for k, v in x.items()}
    return type(x)(reduce_sum(v) for v in x)


def reduce_max(value: float) -> float:
    """The largest ``value`` over the processes (e.g. a pass's wall-clock seconds: the slowest rank's)."""
    return max(gather_list([float(value)]))


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every process."""
    return all(gather_list([bool(flag)]))


def gather_list(items: Sequence[T], *, strided: bool = False) -> list[T]:
    """Every rank's ``items`` (picklable), concatenated in rank order: data-set order for contiguous shards;
    interleaved back into it for ``strided`` ones."""
    if not launched():
        return list(items)
    import torch
    from accelerate.utils import gather_object

    # Called from inside `torch.inference_mode()` passes: torch < 2.5's all_gather_object sizes its buffers
    # with tensors made there, which gloo may then not update in place.
    with torch.inference_mode(False):
        if not strided:
            return list(gather_object(list(items)))
        indexed = gather_object([(rank() + i * world_size(), item) for i, item in enumerate(items)])
    return [item for _, item in sorted(indexed, key=lambda pair: pair[0])]


def gather_rows(t, dim: int = 0):
    """A tensor's shards concatenated along ``dim`` in rank order (ragged shards welcome), on the CPU; a rank
    whose shard was empty passes None (None back if every shard was)."""
    if not launched():
        return t
    import torch

    parts = [p for p in gather_list([None if t is None else t.detach().cpu()]) if p is not None]
    return torch.cat(parts, dim=dim) if parts else None


def split_record(n_local: int) -> dict[str, Any]:
    """``{"world_size": N, "rank_samples": [samples of rank 0, 1, …]}`` for a command's ``results.json``: a reader
    sees that the pass was split, not repeated (the counts add up to the data set)."""
    counts = gather_list([int(n_local)])
    return {"world_size": len(counts), "rank_samples": counts}


def rows(batches: Sequence[dict]) -> int:
    """Samples (rows) in a list of batches."""
    return sum(len(b["labels"]) for b in batches)


def rank0(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)`` on rank 0 only (writing files, drawing figures); every rank waits for it, so the
    files exist when any rank returns. Returns ``fn``'s value on rank 0, None elsewhere."""
    if not launched():
        return fn(*args, **kwargs)
    out = fn(*args, **kwargs) if is_main() else None
    state().wait_for_everyone()
    return out


class _Follower:
    """What ranks other than 0 hold for a run folder: its path; recording is rank 0's."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def record(self, **_: Any) -> None:
        pass


def open_folder(out: Path, command: str, *, overwrite: bool, outputs: Sequence[str]):
    """``run_folder.open_run_folder`` on rank 0; every rank first makes its check without writing, so a bad
    ``out`` is the same one-line error on every rank, and none sees rank 0's folder half made; all return once it
    exists."""
    from layerwise.run_folder import check_run_folder, open_run_folder

    if not launched():
        return open_run_folder(out, command, overwrite=overwrite, outputs=outputs)
    check_run_folder(out, command, overwrite=overwrite, outputs=outputs)  # on every rank, before rank 0 writes
    state().wait_for_everyone()
    folder = open_run_folder(out, command, overwrite=overwrite, outputs=outputs) if is_main() else _Follower(out)
    state().wait_for_everyone()  # the folder exists before any rank writes below it (lpft's training runs)
    return folder
