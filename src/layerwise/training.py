"""Layer-wise training on Hugging Face Accelerate: standard, aligned, cos-reg, multi-exit, LP and LP-FT.

One code path for one CPU, one GPU (``--mixed-precision bf16|fp16``) and several processes
(``accelerate launch``: DDP, or FSDP from Accelerate's config). ``train(config)`` is the whole API; the
``layerwise train`` command is a thin wrapper.

Reproducibility and resumption
- ``--batch-size`` is the global batch of one forward pass (split evenly across processes); an optimizer
  step consumes ``grad_accum`` of them. Epoch e visits a permutation drawn from a generator seeded by
  (seed, e), cut into full batches (the ragged tail is dropped), so any position can be replayed.
- A checkpoint (every ``checkpoint_every`` optimizer steps and at each epoch end) holds the weights
  (safetensors), optimizer + scheduler state, every RNG state, the position (epoch, batch, step) and the
  running epoch loss. It is written to a temporary directory renamed into place, then ``latest.json``
  is replaced atomically, so a kill at any moment leaves the previous checkpoint usable. Resuming skips
  the consumed batches by iterating them (so the augmentation stream replays), restores the RNGs, and
  on CPU ends bitwise equal to an uninterrupted run.
- A non-finite loss stops the run with a ``LayerwiseError`` before any further checkpoint is written.
- Under FSDP the checkpoint holds the full model state (``accelerator.get_state_dict``); the optimizer
  state is the main process's view, so resuming an FSDP run is not covered (DDP and single device are).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from layerwise import objectives as O
from layerwise.capture import to_device
from layerwise.errors import LayerwiseError
from layerwise.evaluate import lm_targets
from layerwise.stack import LayerStack
from layerwise.zoo import atomic_write

SCHEDULES = ("constant", "cosine", "multistep")
MIXED_PRECISION = ("no", "bf16", "fp16")


# ---------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Every ``layerwise train`` option; YAML presets and ``--config`` files hold the same keys."""

    model: str = "vit-digits"
    data: str = "digits"
    out: str = "runs/train"
    objective: str = "standard"
    ft_objective: str = "standard"  # stage-2 objective of lp-ft
    epochs: int = 3
    batch_size: int = 64  # global, per forward pass
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "constant"  # constant | cosine | multistep, after an optional linear warm-up
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    seed: int = 0
    limit: int | None = None
    eval_limit: int | None = None
    eval_split: str = "test"
    augment: bool = False
    layer_weights: Any = "linear"  # linear | uniform | list of L numbers
    cos_beta: float = 1.0
    depth: int | None = None  # override the depth of the project's own models
    max_length: int | None = None  # text models: tokens per example
    seq_len: int = 128  # language models: tokens per block
    lp_cv: int = 3
    checkpoint_every: int = 0  # optimizer steps; 0 = epoch ends only
    resume: bool = False
    data_dir: str | None = None
    num_workers: int = 0
    cpu: bool = False
    progress: bool = True

    def check(self) -> TrainConfig:
        if self.objective not in O.OBJECTIVES:
            raise LayerwiseError(f"unknown objective {self.objective!r}: use one of {', '.join(O.OBJECTIVES)}")
        if self.ft_objective not in O.FT_OBJECTIVES:
            raise LayerwiseError(f"unknown ft_objective {self.ft_objective!r}: use one of {', '.join(O.FT_OBJECTIVES)}")
        if self.schedule not in SCHEDULES:
            raise LayerwiseError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise LayerwiseError(f"unknown mixed precision {self.mixed_precision!r}: use no, bf16 or fp16")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise LayerwiseError(f"{name}={getattr(self, name)} must be positive")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise LayerwiseError(f"lr={self.lr} must be a positive finite number")
        return self

    @property
    def stage2(self) -> str:
        """The objective of gradient training (lp-ft fine-tunes with ``ft_objective``)."""
        return self.ft_objective if self.objective == "lp-ft" else self.objective


_KEYS = {f.name for f in fields(TrainConfig)}
# Changing these between a checkpoint and its resumption would silently break the run.
_RESUME_KEYS = ("model", "data", "objective", "ft_objective", "batch_size", "grad_accum", "seed", "limit", "depth",
                "augment", "lr", "schedule", "milestones", "warmup_steps", "layer_weights")


def load_preset(name: str) -> dict[str, Any]:
    """A packaged preset (``layerwise/presets/NAME.yaml``) as a dict of TrainConfig keys."""
    path = resources.files("layerwise").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name[:-5] for p in resources.files("layerwise").joinpath("presets").iterdir()
                       if p.name.endswith(".yaml"))
        raise LayerwiseError(f"unknown preset {name!r}: use one of {', '.join(known)}")
    return _read_yaml(path.read_text(), f"preset {name}")


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise LayerwiseError(f"{source} is not valid YAML ({str(e).splitlines()[0]}): fix the file") from e
    if not isinstance(data, dict):
        raise LayerwiseError(f"{source} must be a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise LayerwiseError(f"{source} has unknown keys {', '.join(unknown)}: valid keys are {', '.join(sorted(_KEYS))}")
    return data


def resolve_config(preset: str | None = None, config_file: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults < preset < config file < explicit overrides (``None`` overrides are ignored)."""
    merged: dict[str, Any] = {}
    if preset:
        merged.update(load_preset(preset))
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise LayerwiseError(f"config file {path} not found: pass an existing YAML file")
        merged.update(_read_yaml(path.read_text(), str(path)))
    merged.update({k.replace("-", "_"): v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(merged) - _KEYS)
    if unknown:
        raise LayerwiseError(f"unknown options {', '.join(unknown)}")
    return TrainConfig(**merged).check()


# ---------------------------------------------------------------- data order


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Full batches of a permutation of range(n) drawn from a generator seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    return [order[i * batch_size:(i + 1) * batch_size].tolist() for i in range(n // batch_size)]


def shard(batches: Sequence[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's contiguous slice of every global batch (equal sizes, so DDP's mean is the global mean)."""
    return [b[rank * len(b) // world:(rank + 1) * len(b) // world] for b in batches]


# ---------------------------------------------------------------- schedules


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


# ---------------------------------------------------------------- the trained module


class ObjectiveModule(nn.Module):
    """Wraps the stack (and multi-exit heads) so one ``forward(batch, phase)`` returns the loss.

    Computing the loss inside ``forward`` lets DDP/FSDP see every parameter use.
    """

    def __init__(self, stack: LayerStack, exit_heads: nn.ModuleList | None, weights: Tensor, beta: float):
        super().__init__()
        self.stack, self.exit_heads, self.beta = stack, exit_heads, beta
        self.register_buffer("weights", weights.float(), persistent=False)

    def forward(self, batch: dict[str, Tensor], phase: str) -> Tensor:
        states = list(self.stack.states(batch))[1:]  # layers 1..L
        hs, mask, labels, task = [s.h for s in states], states[-1].mask, batch["labels"], self.stack.task
        readout = self.stack.readout
        if phase == "standard":
            return O.standard(O.layer_ce([readout], hs[-1:], mask, labels, task))
        if phase == "aligned":
            return O.aligned(O.layer_ce([readout] * len(hs), hs, mask, labels, task), self.weights)
        if phase == "multi-exit":
            return O.multi_exit(O.layer_ce(list(self.exit_heads), hs, mask, labels, task), self.weights)
        if phase == "cos-reg":
            ce_last = O.layer_ce([readout], hs[-1:], mask, labels, task)[0]
            return O.cos_reg(ce_last, [self.stack.features(s) for s in states], self.weights, self.beta)
        raise LayerwiseError(f"unknown training phase {phase!r}")


# ---------------------------------------------------------------- linear probe (LP stage)


def readout_linear(stack: LayerStack) -> nn.Linear:
    """The last nn.Linear of the readout head: LP fits its input → logits map."""
    head = stack.readout.head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    if not linears:
        raise LayerwiseError("this model's readout has no linear classifier: LP needs a classification head")
    return linears[-1]


@torch.no_grad()
def head_inputs(stack: LayerStack, loader: Iterable[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, D) inputs of the readout's final Linear (forward hook, eval mode) and (N,) labels."""
    linear, feats, labels = readout_linear(stack), [], []
    handle = linear.register_forward_hook(lambda _m, args, _out: feats.append(args[0].detach().float().cpu()))
    was = stack.training
    stack.eval()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            stack(batch)
            labels.append(batch["labels"].cpu())
    finally:
        handle.remove()
        stack.train(was)
    return torch.cat(feats), torch.cat(labels)


def fit_probe(x: Tensor, y: Tensor, cv: int = 3, seed: int = 0):
    """L2 logistic regression on frozen features, C chosen by cross-validation (LogisticRegressionCV)."""
    from sklearn.linear_model import LogisticRegressionCV

    import warnings

    clf = LogisticRegressionCV(Cs=np.logspace(-3, 3, 7), cv=cv, max_iter=3000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.8+ announces default changes that do not affect L2 + accuracy
        warnings.simplefilter("ignore", FutureWarning)
        return clf.fit(x.double().numpy(), y.numpy())


@torch.no_grad()
def probe_to_linear(clf, linear: nn.Linear) -> None:
    """Copy a fitted probe into ``linear``. Binary probes (one logit z) become logits (−z/2, z/2)."""
    coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
    bias = torch.as_tensor(clf.intercept_, dtype=torch.float64)
    classes = [int(c) for c in clf.classes_]
    if coef.shape[0] == 1:
        coef, bias = torch.cat([-coef / 2, coef / 2]), torch.cat([-bias / 2, bias / 2])
    if max(classes) >= linear.out_features or coef.shape[1] != linear.in_features:
        raise LayerwiseError(f"the probe ({coef.shape[0]} classes × {coef.shape[1]}) does not fit the head "
                             f"({linear.out_features} × {linear.in_features}): check --data matches the model")
    weight = torch.zeros(linear.out_features, linear.in_features, dtype=torch.float64)
    b = torch.full((linear.out_features,), -1e4, dtype=torch.float64)  # classes absent from training: never predicted
    weight[classes], b[classes] = coef, bias
    linear.weight.copy_(weight.to(linear.weight))
    if linear.bias is not None:
        linear.bias.copy_(b.to(linear.bias))


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(stack: LayerStack, loader: DataLoader, exit_heads: nn.ModuleList | None = None, *, device: torch.device,
             rank: int = 0, world: int = 1, reduce=None, autocast=nullcontext) -> dict[str, list[float]]:
    """Per-layer shared-readout loss and accuracy for layers 0..L (and each exit head for 1..L).

    Batches are dealt round-robin to processes; sums are reduced, so the result does not depend on
    the number of processes.
    """
    was = stack.training
    stack.eval()
    sums = None
    try:
        for i, batch in enumerate(loader):
            if i % world != rank:
                continue
            batch = to_device(batch, device)
            with autocast():
                states = list(stack.states(batch))
                rows = [(stack.readout, s) for s in states]
                if exit_heads is not None:
                    rows += list(zip(exit_heads, states[1:]))
                part = []
                for readout, s in rows:
                    logits = readout(s.h, s.mask).float()
                    logits, targets = (lm_targets(logits, batch["labels"], s.mask) if stack.task == "lm"
                                       else (logits, batch["labels"]))
                    part.append(torch.stack([torch.nn.functional.cross_entropy(logits, targets, reduction="sum"),
                                             (logits.argmax(-1) == targets).sum().float(),
                                             torch.tensor(float(targets.numel()), device=logits.device)]))
            part = torch.stack(part).double()
            sums = part if sums is None else sums + part
    finally:
        stack.train(was)
    if sums is None:
        sums = torch.zeros(stack.num_layers + 1 + (len(exit_heads) if exit_heads is not None else 0), 3,
                           dtype=torch.float64, device=device)
    if reduce is not None:
        sums = reduce(sums)
    sums = sums.cpu()
    n = stack.num_layers + 1
    loss, acc = (sums[:, 0] / sums[:, 2].clamp_min(1)).tolist(), (sums[:, 1] / sums[:, 2].clamp_min(1)).tolist()
    out = {"accuracy": acc[:n], "loss": loss[:n]}
    if stack.task == "lm":
        out["perplexity"] = [math.exp(min(x, 700.0)) for x in loss[:n]]
    if exit_heads is not None:
        out["exit_accuracy"], out["exit_loss"] = acc[n:], loss[n:]
    return out


# ---------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from (python, numpy, torch CPU and CUDA)."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                     *np_state[2:]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _corrupt(path: Path, e: Exception) -> LayerwiseError:
    return LayerwiseError(f"checkpoint file {path} is corrupt ({type(e).__name__}): delete {path.parent.parent} "
                          "to start over, or restore the file")


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The directory ``latest.json`` points to, or None when no checkpoint was completed."""
    pointer = ckpt_root / "latest.json"
    if not pointer.exists():
        return None
    try:
        path = ckpt_root / json.loads(pointer.read_text())["dir"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _corrupt(pointer, e) from e
    if not path.is_dir():
        raise LayerwiseError(f"{pointer} points to {path}, which is missing: delete {ckpt_root} to start over")
    return path


def load_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Weights, optimizer/scheduler state, RNG state and position; any unreadable file → LayerwiseError."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for name, read in (("model.safetensors", lambda p: load_file(str(p))),
                       ("trainer_state.json", lambda p: json.loads(p.read_text())),
                       ("optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)),
                       (f"rng-{rank}.pt", lambda p: torch.load(p, map_location="cpu", weights_only=False))):
        p = path / name
        if not p.exists():
            raise LayerwiseError(f"checkpoint {path} lacks {name}: delete {path.parent} to start over")
        try:
            out[name.split(".")[0].split("-")[0]] = read(p)
        except Exception as e:  # safetensors / pickle / json raise many types on truncated files
            raise _corrupt(p, e) from e
    return out


# ---------------------------------------------------------------- the trainer


@dataclass
class Position:
    """Where the run stands: epochs completed, micro-batches consumed in the current epoch, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    lp_done: bool = False


class Trainer:
    """Build everything from a TrainConfig, then ``fit()``. ``step(micro_batches)`` is one optimizer step."""

    def __init__(self, cfg: TrainConfig, train_ds=None, eval_ds=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        from layerwise.data import load_dataset

        self.cfg = cfg = cfg.check()
        self.out = Path(cfg.out)
        self.ckpt_root = self.out / "checkpoint"
        # Alternating objectives leave some parameters unused on half the steps (multi-exit heads).
        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.stage2 in ("multi-exit",))
        _reset_accelerate_state(cfg.mixed_precision)
        self.accelerator = acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.cpu, kwargs_handlers=[ddp])
        self.rank, self.world = acc.process_index, acc.num_processes
        if cfg.batch_size % self.world:
            raise LayerwiseError(f"batch size {cfg.batch_size} is not divisible by {self.world} processes")
        set_seed(cfg.seed)

        if train_ds is None:
            train_ds = load_dataset(cfg.data, "train", limit=cfg.limit, seed=cfg.seed, data_dir=cfg.data_dir)
        if eval_ds is None:
            eval_ds = load_dataset(cfg.data, cfg.eval_split, limit=cfg.eval_limit, seed=cfg.seed, data_dir=cfg.data_dir)
        self.train_ds, self.eval_ds = train_ds, eval_ds
        self.bundle = build_bundle(cfg, self.train_ds.num_classes)
        self.stack = self.bundle.stack
        self.pos = Position()
        self.eval_loader = self._loader(self.eval_ds, cfg.eval_batch_size or cfg.batch_size)
        self._train_set, self._collate_seed = None, None
        n = len(self._epoch_dataset(0)[0])
        self.micro_per_epoch = (n // cfg.batch_size) // cfg.grad_accum * cfg.grad_accum
        self.steps_per_epoch = self.micro_per_epoch // cfg.grad_accum
        if cfg.objective != "lp" and cfg.epochs and self.steps_per_epoch == 0:
            raise LayerwiseError(f"{n} training examples make no full batch of {cfg.batch_size}×{cfg.grad_accum}: "
                                 "lower --batch-size/--grad-accum or raise --limit")
        self.total_steps = self.steps_per_epoch * cfg.epochs

        weights = O.layer_weights(self.stack.num_layers, cfg.layer_weights)
        self.module = ObjectiveModule(self.stack, self.bundle.exit_heads, weights, cfg.cos_beta)
        self.optimizer = make_optimizer(self.module, cfg.lr, cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, self.total_steps, cfg.warmup_steps,
                                        [m * self.steps_per_epoch for m in cfg.milestones], cfg.gamma)
        self._rng = self._resume()
        self.model, self.optimizer = acc.prepare(self.module, self.optimizer)

    # -- setup helpers

    def _loader(self, ds, batch_size: int) -> DataLoader:
        from layerwise.data import make_loader

        return make_loader(ds, self.bundle.inputs, batch_size, seq_len=self.cfg.seq_len, num_workers=self.cfg.num_workers)

    def _epoch_dataset(self, epoch: int):
        """(dataset, collate) for an epoch; image augmentation draws from a stream seeded by (seed, epoch, rank)."""
        from layerwise.data import make_loader

        cfg = self.cfg
        if self._train_set is not None and not cfg.augment:
            return self._train_set  # collation is deterministic: build once (corpora tokenise once)
        seed = (cfg.seed * 100_003 + epoch) * 64 + self.rank
        base = make_loader(self.train_ds, self.bundle.inputs, 1, augment=cfg.augment, seed=seed, seq_len=cfg.seq_len)
        self._train_set = (base.dataset, base.collate_fn)
        return self._train_set

    def _epoch_loader(self, epoch: int) -> DataLoader:
        dataset, collate = self._epoch_dataset(epoch)
        batches = epoch_order(len(dataset), self.cfg.batch_size, self.cfg.seed, epoch)[: self.micro_per_epoch]
        # An own generator: creating the iterator must not draw from the global RNG (resume replays it).
        return DataLoader(dataset, batch_sampler=shard(batches, self.rank, self.world), collate_fn=collate,
                          num_workers=self.cfg.num_workers, generator=torch.Generator().manual_seed(self.cfg.seed))

    def _resume(self) -> dict | None:
        path = latest_checkpoint(self.ckpt_root) if self.ckpt_root.exists() else None
        if path is None:
            if self.cfg.resume:
                raise LayerwiseError(f"--resume: no checkpoint in {self.ckpt_root}; run without --resume to start")
            return None
        ck = load_checkpoint(path, self.rank)
        state = ck["trainer_state"]
        saved = state.get("config", {})
        changed = [k for k in _RESUME_KEYS if k in saved and saved[k] != _jsonable(getattr(self.cfg, k))]
        if changed:
            raise LayerwiseError(f"{path} was written with other {', '.join(changed)}: use the same options, "
                                 f"or another --out to start a new run")
        try:
            self.module.load_state_dict(ck["model"])
        except RuntimeError as e:
            raise LayerwiseError(f"{path}/model.safetensors does not match the model: {str(e).splitlines()[0]}") from e
        try:
            self.optimizer.load_state_dict(ck["optimizer"]["optimizer"])
            self.scheduler.load_state_dict(ck["optimizer"]["scheduler"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise _corrupt(path / "optimizer.pt", e) from e
        self.pos = Position(**state["position"])
        return ck["rng"]

    # -- checkpointing

    def save_checkpoint(self, tag: str) -> Path:
        """Write DIR/checkpoint/step-N-TAG via a temporary directory, then point latest.json at it."""
        acc, root = self.accelerator, self.ckpt_root
        name = f"step-{self.pos.step:08d}-{tag}"
        tmp = root / f".tmp-{name}"
        state = acc.get_state_dict(self.model)  # collective under FSDP: every rank calls it
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng-{self.rank}.pt")
        if acc.is_main_process:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       tmp / "optimizer.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(
                {"position": asdict(self.pos), "config": _jsonable(asdict(self.cfg))}, indent=2))
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(root / name, ignore_errors=True)
            os.replace(tmp, root / name)
            _atomic_text(json.dumps({"dir": name, "step": self.pos.step, "epoch": self.pos.epoch}), root / "latest.json")
            for old in root.iterdir():  # keep only the newest complete checkpoint
                if old.is_dir() and old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return root / name

    # -- training

    def step(self, micro_batches: Sequence[dict[str, Tensor]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns their mean loss."""
        acc, phase = self.accelerator, O.phase(self.cfg.stage2, self.pos.step)
        total = 0.0
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with nullcontext() if last else acc.no_sync(self.model):
                loss = self.model(to_device(batch, acc.device), phase)
                value = loss.item()
                self._check_finite(value)
                acc.backward(loss / len(micro_batches))
            total += value
        if self.cfg.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        return total / len(micro_batches)

    def _check_finite(self, value: float) -> None:
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=self.accelerator.device)
        if self.world > 1:  # every process must stop together, or the others hang in the next all-reduce
            bad = self.accelerator.reduce(bad, "sum")
        if bad.item():
            last = latest_checkpoint(self.ckpt_root) if self.ckpt_root.exists() else None
            keep = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
            raise LayerwiseError(f"the loss became {value} at step {self.pos.step} (epoch {self.pos.epoch + 1}): "
                                 f"lower --lr, add --max-grad-norm or use --mixed-precision no; {keep}")

    def evaluate(self) -> dict[str, list[float]]:
        acc = self.accelerator
        return evaluate(self.stack, self.eval_loader, self.bundle.exit_heads, device=acc.device, rank=self.rank,
                        world=self.world, reduce=(lambda t: acc.reduce(t, "sum")) if self.world > 1 else None,
                        autocast=acc.autocast)

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with (self.out / "log.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _trim_log(self) -> None:
        """On resume, drop records of epochs the checkpoint had not completed (they are redone)."""
        path = self.out / "log.jsonl"
        if not self.accelerator.is_main_process or not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if line.strip()
                and json.loads(line).get("epoch", 0) <= self.pos.epoch]
        _atomic_text("".join(line + "\n" for line in keep), path)

    def linear_probe(self) -> dict[str, float]:
        """LP stage: fit the readout's last Linear on frozen features (C by cross-validation)."""
        if self.stack.task != "classification":
            raise LayerwiseError(f"LP needs a classifier; {self.cfg.model} is a {self.stack.task} model")
        loader = self._loader(self.train_ds, self.cfg.eval_batch_size or self.cfg.batch_size)
        x, y = head_inputs(self.stack, loader, self.accelerator.device)
        clf = fit_probe(x, y, self.cfg.lp_cv, self.cfg.seed)
        probe_to_linear(clf, readout_linear(self.stack))
        return {"lp_C": float(np.ravel(clf.C_)[0]), "lp_train_accuracy": float(clf.score(x.double().numpy(), y.numpy()))}

    def fit(self) -> dict[str, Any]:
        """Train (resuming if a checkpoint exists), log every epoch, save the final model; return its metrics."""
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        if self._rng is not None:
            self._trim_log()
            set_rng_state(self._rng)
        elif (self.out / "log.jsonl").exists() and acc.is_main_process:
            (self.out / "log.jsonl").unlink()  # a fresh run starts a fresh log
        record: dict[str, Any] = {}
        if cfg.objective in ("lp", "lp-ft") and not self.pos.lp_done:
            info = self.linear_probe()
            self.pos.lp_done = True
            record = {"epoch": 0, "step": 0, "stage": "lp", **info, **self.evaluate()}
            self._log(record)
            if cfg.objective == "lp-ft" and cfg.epochs:
                self.save_checkpoint("lp")
        if cfg.objective != "lp":
            record = self._train_epochs(t0) or record
        if not record:
            record = {"epoch": self.pos.epoch, "step": self.pos.step, **self.evaluate()}
        if acc.is_main_process:
            from layerwise.zoo import save_model

            self.bundle.meta["training"] = {k: v for k, v in _jsonable(asdict(cfg)).items()
                                            if k not in ("out", "resume", "progress", "cpu")}
            save_model(self.bundle, self.out)
            _atomic_text(json.dumps(record, indent=2), self.out / "metrics.json")
        acc.wait_for_everyone()
        return record

    def _train_epochs(self, t0: float) -> dict[str, Any]:
        cfg, acc, pos = self.cfg, self.accelerator, self.pos
        record: dict[str, Any] = {}
        while pos.epoch < cfg.epochs:
            it = iter(self._epoch_loader(pos.epoch))
            for _ in range(pos.batch):  # replay consumed batches (advances the augmentation stream identically)
                next(it)
            bar = tqdm(total=self.steps_per_epoch, initial=pos.batch // cfg.grad_accum, leave=False,
                       desc=f"epoch {pos.epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and acc.is_main_process))
            while pos.batch < self.micro_per_epoch:
                loss = self.step([next(it) for _ in range(cfg.grad_accum)])
                pos.batch += cfg.grad_accum
                pos.loss_sum += loss
                pos.loss_n += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if cfg.checkpoint_every and pos.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint("mid")
            bar.close()
            train_loss = torch.tensor([pos.loss_sum, float(pos.loss_n)], dtype=torch.float64, device=acc.device)
            if self.world > 1:
                train_loss = acc.reduce(train_loss, "sum")
            record = {"epoch": pos.epoch + 1, "step": pos.step, "lr": self.scheduler.get_last_lr()[0],
                      "train_loss": (train_loss[0] / train_loss[1].clamp_min(1)).item(), **self.evaluate(),
                      "elapsed_s": round(time.perf_counter() - t0, 2)}
            self._log(record)
            pos.epoch, pos.batch, pos.loss_sum, pos.loss_n = pos.epoch + 1, 0, 0.0, 0
            self.save_checkpoint("end")
        return record


# ---------------------------------------------------------------- model building and entry point


def build_bundle(cfg: TrainConfig, num_classes: int | None):
    """Load the model (seeded init), apply --depth / --max-length, add multi-exit heads when needed."""
    from layerwise.models import StackModel, build_own
    from layerwise.zoo import ModelBundle, load_model, make_exit_heads

    bundle = load_model(cfg.model, num_classes=num_classes)
    if cfg.depth is not None:
        if not isinstance(bundle.model, StackModel):
            raise LayerwiseError("--depth applies to the project's own models (vit-*, gpt-tiny, mlp-*) only")
        model = build_own({**bundle.model.config_dict(), "depth": cfg.depth})
        bundle = ModelBundle(bundle.name, model, LayerStack(model), bundle.inputs, meta=bundle.meta)
    if cfg.max_length is not None:
        bundle.inputs.max_length = cfg.max_length
    if cfg.stage2 in ("multi-exit", "multi-exit-joint") and bundle.exit_heads is None:
        heads = make_exit_heads(bundle.stack)
        heads[-1] = bundle.stack.readout  # the last exit is the model's own readout
        bundle.exit_heads = heads
    return bundle


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training job described by ``cfg``; returns the final evaluation record."""
    return Trainer(cfg).fit()


# ---------------------------------------------------------------- small helpers


def _reset_accelerate_state(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide state; let a later in-process run pick another precision."""
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and PartialState().num_processes == 1 and state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _atomic_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


__all__ = ["TrainConfig", "Trainer", "train", "resolve_config", "load_preset", "epoch_order", "shard",
           "make_scheduler", "make_optimizer", "ObjectiveModule", "evaluate", "fit_probe", "probe_to_linear",
           "head_inputs", "readout_linear", "load_checkpoint", "latest_checkpoint", "build_bundle"]
