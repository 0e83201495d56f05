"""Shared test helpers: synthetic layer features, tiny models, data batches, subprocess plumbing.

One copy of each, imported by the tests (``from fixtures import ...``) and by the scripts the multi-process
tests launch. Independent float64 reference formulas live in ``_refs.py``; nothing here is a reference.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CLI = (sys.executable, "-c", "from layerwise.cli import main; main()")  # ``layerwise`` as a child's argv prefix


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``layerwise *args`` in this process: (exit status, stdout, stderr)."""
    from layerwise.cli import main

    monkeypatch.setattr(sys, "argv", ["layerwise", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- subprocesses


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: offline, one thread per process (2-core CI), plus ``extra``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def free_port() -> int:
    """A TCP port nobody listens on right now (for torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
               cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -c code args…`` in a fresh interpreter (nothing imported yet), output captured as text."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env or subprocess_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_children(commands: Iterable[tuple[str, Sequence[str]]], workers: int | None = None,
                 env: dict[str, str] | None = None, cwd: Path = ROOT,
                 timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Run each ``(name, argv)`` in its own child process, ``workers`` at a time, and return every child's
    result (returncode, stdout, stderr as text) by name.

    A child starting ``layerwise`` spends its seconds importing torch, on the CPU, so the default is one child
    per core, at most 8: on 2 cores, 8 at once took 94 s where 2 at a time took 73 s. ``commands`` may be a
    generator: each child is queued as soon as it is yielded, so preparing the next one overlaps with those
    already running. A child that runs past ``timeout`` is killed and reported with returncode -9, without
    failing the others.
    """
    env = env or subprocess_env()

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as e:  # its partial output is bytes, whatever ``text`` says
            out, err = (b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (e.stdout, e.stderr))
            return subprocess.CompletedProcess(argv, -9, out, f"{err}\n[killed after {timeout:g} s]")

    futures = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers or min(8, cores)) as pool:
        for name, argv in commands:
            if name in futures:
                raise ValueError(f"two children named {name!r}")
            futures[name] = pool.submit(run, argv)
    return {name: future.result() for name, future in futures.items()}


# ---------------------------------------------------------------- synthetic layer features


def layer_features(n: int = 50, widths: Sequence[int] = (6, 6, 6, 6), seed: int = 0, noise: float = 0.3,
                   offset: float = 1.0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """Features of a random network's layers for n samples: xˡ = tanh(xˡ⁻¹ W / √d) + noise·ε + offset.

    Consecutive layers are related (so similarities are neither 0 nor 1), not centred (so centring matters),
    and drawn from a private generator (the global RNG is untouched).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, widths[0], generator=g, dtype=torch.float64)
    out = []
    for d in widths:
        w = torch.randn(x.shape[1], d, generator=g, dtype=torch.float64) / math.sqrt(x.shape[1])
        x = torch.tanh(x @ w) + noise * torch.randn(n, d, generator=g, dtype=torch.float64) + offset
        out.append(x.to(dtype))
    return out


# ---------------------------------------------------------------- tiny models


def tiny_mlp(depth: int = 3, num_classes: int = 4, seed: int = 0, input_dim: int = 6, dim: int = 8, n: int = 5):
    """The project's own residual MLP, its layer stack and a batch: (model, stack, {"inputs", "labels"})."""
    from layerwise.models import build_own
    from layerwise.stack import LayerStack

    torch.manual_seed(seed)
    model = build_own({"layerwise_arch": "mlp", "input_dim": input_dim, "dim": dim, "depth": depth,
                       "num_classes": num_classes, "residual": True})
    x = torch.randn(n, input_dim)
    y = torch.arange(n) % num_classes
    return model, LayerStack(model), {"inputs": x, "labels": y}


def train_aligned(bundle, steps: int = 120, seed: int = 0):
    """A few plain-PyTorch steps of the aligned loss Σ_ℓ λ_ℓ CE(readout(hˡ), y), λ_ℓ = 2ℓ/(L(L+1)), on digits.

    Written without the library's trainer or objectives, so tests of early exit get a model whose early
    layers are meaningful without depending on the code under test.
    """
    from layerwise.data import load_dataset, make_loader

    torch.manual_seed(seed)
    loader = make_loader(load_dataset("digits", "train"), bundle.inputs, 64, shuffle=True, seed=seed)
    stack, L = bundle.stack, bundle.stack.num_layers
    opt = torch.optim.AdamW(bundle.model.parameters(), lr=3e-3)
    bundle.model.train()
    step = 0
    while step < steps:
        for batch in loader:
            labels = batch.pop("labels")
            states = list(stack.states(batch))[1:]
            loss = sum(2 * ell / (L * (L + 1)) * F.cross_entropy(stack.readout(s.h, s.mask), labels)
                       for ell, s in enumerate(states, start=1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    return bundle.model.eval()


def logits_of(output) -> torch.Tensor:
    """A model's own forward output as a logits tensor (HF models return an output object)."""
    return output.logits if hasattr(output, "logits") else output


# ---------------------------------------------------------------- data and configs


def real_data_dir() -> Path | None:
    """The shared real-data root (``LAYERWISE_DATA``, else ``../shared/data`` beside the repository or the
    working directory), or None where this machine has none (tests needing it skip)."""
    for candidate in (os.environ.get("LAYERWISE_DATA"), ROOT.parent / "shared" / "data", Path("../shared/data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


def data_batches(data: str, inputs, split: str = "test", limit: int | None = None, batch_size: int = 32,
                 **loader_kw) -> list[dict[str, torch.Tensor]]:
    """A built-in data set's batches for a model's InputSpec, collated once and kept in memory (CPU)."""
    from layerwise.data import load_dataset, make_loader, materialize

    return materialize(make_loader(load_dataset(data, split, limit=limit), inputs, batch_size, **loader_kw), "cpu")


SMALL_TRAIN = {"model": "mlp-residual", "data": "digits", "epochs": 1, "batch_size": 32, "limit": 256,
               "eval_limit": 96, "lr": 1e-3, "progress": False, "cpu": True}  # train_config's defaults


def train_config(tmp_path: Path, name: str = "run", **overrides):
    """A small, fast TrainConfig (mlp-residual on 256 digits, one epoch, CPU) writing to tmp_path/name."""
    from layerwise.training import resolve_config

    return resolve_config(**{**SMALL_TRAIN, "out": str(tmp_path / name), **overrides})


def train_flags(out: Path, **overrides) -> list[str]:
    """The ``layerwise train`` arguments of ``train_config(out.parent, out.name, **overrides)``: the same run."""
    flags = ["train", "--out", str(out)]
    for key, value in {**SMALL_TRAIN, **overrides}.items():
        flag = key.replace("_", "-")
        flags += [f"--{flag}"] if value is True else [f"--no-{flag}"] if value is False else [f"--{flag}", str(value)]
    return flags


# A WikiText-shaped corpus: headings, paragraphs, a paragraph with a second line.
CORPUS = (" = Heading = \n \n"
          " First paragraph has some words in it .\n \n"
          " Second paragraph : more words follow here .\n"
          " a second line of the same paragraph .\n \n"
          " = = Sub heading = = \n \n"
          " Third paragraph , the last one here .\n")
