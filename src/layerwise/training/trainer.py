"""Layer-wise training on Hugging Face Accelerate: standard, aligned, cos-reg, multi-exit, LP and LP-FT.

One code path for one CPU, one GPU (``--mixed-precision bf16|fp16``: ``torch.autocast``, and a gradient
scaler for fp16) and several processes (``accelerate launch``: DDP, or FSDP from Accelerate's config).
``train(config)`` is the whole API; the ``layerwise train`` command is a thin wrapper.

Reproducibility and resumption
- ``--batch-size`` is the global batch of one forward pass (split evenly across processes); an optimizer
  step consumes ``grad_accum`` of them. Epoch e visits a permutation drawn from a generator seeded by
  (``data_seed``, e) (``data_seed`` defaults to ``seed``, which seeds the initial weights), cut into full
  batches (the ragged tail is dropped), so any position can be replayed.
- A checkpoint (every ``checkpoint_every`` optimizer steps and at each epoch end, ``checkpointing.py``)
  holds the weights, optimizer + scheduler state, every RNG state, the position and the running epoch loss.
  Resuming skips the consumed batches by iterating them (so the augmentation stream replays), restores the
  RNGs, and on CPU ends bitwise equal to an uninterrupted run.
- A non-finite loss stops the run with a ``LayerwiseError`` before any further checkpoint is written.
- The run folder follows the one rule of ``layerwise.run_folder``: a folder holding only the tool's files (a
  run to resume) is accepted, one holding a user's files only with ``overwrite`` (they are kept), and nothing
  the trainer did not write is replaced or deleted.
- The parts it composes: the folder check (``open_train_folder``), resumption (``resume.Checkpoints``), the
  LP stage (``probe.linear_probe``), logging (``log.TrainLog``); the loop (``step``, ``_train_epochs``) is here.
- Under FSDP the checkpoint holds the full model state (``accelerator.get_state_dict``); the optimizer
  state is the main process's view, so resuming an FSDP run is not covered (DDP and single device are).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from layerwise.checkpoints import save_model
from layerwise.checkpoints.save import MODEL_FILES
from layerwise.data import load_dataset, make_loader, to_device
from layerwise.errors import LayerwiseError
from layerwise.inference.draft_vocab import FILES as COUNT_FILES, copy_token_counts
from layerwise.training.scores import evaluate_layers, predictions_record, task_metric_name
from layerwise.report.serialize import atomic_write_text, jsonable
from layerwise import parallel
from layerwise.run_folder import RunFolder
from layerwise.training import objectives as O
from layerwise.training.checkpointing import Position, set_rng_state
from layerwise.training.config import RUN_ONLY_KEYS, TrainConfig
from layerwise.training.layer_dropout import LayerDropout
from layerwise.training.log import LOG, METRICS, PREDICTIONS, TRACKER_DIR, TrainLog, init_trackers
from layerwise.training.objectives import ObjectiveModule
from layerwise.training.probe import linear_probe
from layerwise.training.resume import CHECKPOINTS, Checkpoints
from layerwise.training.schedules import epoch_order, make_optimizer, make_scheduler, shard
from layerwise.training.setup import build_bundle, make_accelerator

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OUTPUTS = (LOG, METRICS, PREDICTIONS, CHECKPOINTS, *MODEL_FILES, *COUNT_FILES, TRACKER_DIR)  # every top-level entry a training run writes


def open_train_folder(cfg: TrainConfig) -> RunFolder:
    """Before any work: ``resume`` needs a checkpoint; the folder follows ``layerwise.run_folder``'s rule, and
    under a launcher rank 0 alone makes it (``parallel.open_folder``)."""
    out = Path(cfg.out)
    if cfg.resume and not (out / CHECKPOINTS / "latest.json").exists():
        raise LayerwiseError(f"`resume`: no checkpoint in {out / CHECKPOINTS}; run without `resume` to start",
                             option="resume")
    if parallel.launched():
        parallel.state(cfg.cpu)  # first: the process group the Accelerator will reuse (gloo with `cpu`)
    return parallel.open_folder(out, "train", overwrite=cfg.overwrite, outputs=OUTPUTS)


class Trainer:
    """Build everything from a TrainConfig, then ``fit()``. ``step(micro_batches)`` is one optimizer step."""

    def __init__(self, cfg: TrainConfig, train_ds=None, eval_ds=None):
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.objective = O.get_objective(cfg.objective)
        if cfg.aligned_layers is not None and O.ALIGNED not in O.get_objective(cfg.stage2).schedule:
            raise LayerwiseError(f"`aligned_layers` draws the layers of the aligned loss, and objective "
                                 f"{cfg.stage2!r} has none: use an aligned objective or drop `aligned_layers`",
                                 option="aligned_layers")
        self.out = Path(cfg.out)
        self.folder = self.open_folder(cfg)
        self.accelerator = acc = make_accelerator(cfg)
        self.checkpoints = Checkpoints(self.out / CHECKPOINTS, acc)
        self.log = TrainLog(self.out / LOG, writer=acc.is_main_process, accelerator=acc)
        self.rank, self.world = acc.process_index, acc.num_processes
        set_seed(cfg.seed)
        dtype = AUTOCAST_DTYPES.get(cfg.mixed_precision)
        self.autocast = (lambda: torch.autocast(acc.device.type, dtype=dtype)) if dtype else nullcontext
        self.scaler = torch.amp.GradScaler(acc.device.type, enabled=cfg.mixed_precision == "fp16")

        if train_ds is None:
            train_ds = load_dataset(cfg.data, cfg.train_split, limit=cfg.limit, seed=cfg.seed, data_dir=cfg.data_dir,
                                    columns=cfg.columns)
        if eval_ds is None:
            eval_ds = load_dataset(cfg.data, cfg.eval_split, limit=cfg.eval_limit, seed=cfg.seed, data_dir=cfg.data_dir,
                                   columns=cfg.columns)
        self.train_ds, self.eval_ds = train_ds, eval_ds
        self.bundle = build_bundle(cfg, self.train_ds.num_classes)
        self.stack = self.bundle.stack
        self.log.num_layers = self.stack.num_layers  # trackers name per-layer values by layer
        if cfg.aligned_layers is not None and self.stack.task != "lm":
            raise LayerwiseError(f"`aligned_layers` samples the layers of a language model's aligned loss, and "
                                 f"{cfg.model} is a {self.stack.task} model: drop `aligned_layers`",
                                 option="aligned_layers")
        self.layer_dropout = LayerDropout(self.stack, cfg.layer_dropout, cfg.seed) if cfg.layer_dropout else None
        for ds in (train_ds, eval_ds):  # before any step: out-of-range labels would crash inside the loss
            ds.check_labels(self.stack.num_classes, cfg.model)
        self.pos = Position()
        self._kept: dict[str, Tensor] = {}  # the last evaluation's predictions, for predictions.json
        self.eval_loader = self._loader(self.eval_ds, cfg.eval_batch_size or cfg.batch_size)
        self._train_set = None
        n = len(self._epoch_dataset(0)[0])
        self.micro_per_epoch = (n // cfg.batch_size) // cfg.grad_accum * cfg.grad_accum
        self.steps_per_epoch = self.micro_per_epoch // cfg.grad_accum
        if self.objective.trains and cfg.epochs and self.steps_per_epoch == 0:
            raise LayerwiseError(f"{n} training examples make no full batch of {cfg.batch_size}×{cfg.grad_accum}: "
                                 "lower `batch_size` or `grad_accum`, or raise `limit`")
        self.total_steps = self.steps_per_epoch * cfg.epochs

        weights = O.layer_weights(self.stack.num_layers, cfg.layer_weights)
        self.module = self.make_module(weights)
        self.optimizer = make_optimizer(self.module, cfg.lr, cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, self.total_steps, cfg.warmup_steps,
                                        [m * self.steps_per_epoch for m in cfg.milestones], cfg.gamma)
        restored = self.checkpoints.restore(cfg, self.module, self.optimizer, self.scheduler, self.scaler)
        self.pos, self._rng = restored if restored else (self.pos, None)
        self.model, self.optimizer = acc.prepare(self.module, self.optimizer)
        # Called with the trainer before the first gradient step of fit() and after every optimizer step
        # (e.g. to log the head norm along training: ``commands/lpft.py``).
        self.step_hooks: list[Callable[[Trainer], None]] = []

    # -- what a trainer of other parameters overrides (training/lens.py: a tuned lens over a frozen model)

    def open_folder(self, cfg: TrainConfig) -> RunFolder:
        return open_train_folder(cfg)

    def make_module(self, weights: Tensor) -> torch.nn.Module:
        """What the optimizer trains: ``forward(batch, phase)`` returns the phase's loss."""
        cfg = self.cfg
        return ObjectiveModule(self.stack, self.bundle.exit_heads, weights, cfg.cos_beta, cfg.lm_loss,
                               aligned_layers=cfg.aligned_layers, seed=cfg.seed)

    def save_outputs(self) -> None:
        """What the finished run leaves in ``out`` besides metrics.json (main process only): the model."""
        self.bundle.meta["training"] = {k: v for k, v in jsonable(self.cfg.model_dump()).items()
                                        if k not in RUN_ONLY_KEYS}
        save_model(self.bundle, self.out)
        copy_token_counts(self.cfg.model, self.out)  # the draft vocabulary of `generate`'s `draft_vocab`

    # -- data

    def _loader(self, ds, batch_size: int) -> DataLoader:
        return make_loader(ds, self.bundle.inputs, batch_size, seq_len=self.cfg.seq_len, num_workers=self.cfg.num_workers)

    def _epoch_dataset(self, epoch: int):
        """(dataset, collate) for an epoch; image augmentation draws from a stream seeded by (seed, epoch, rank)."""
        cfg = self.cfg
        if self._train_set is not None and not cfg.augment:
            return self._train_set  # collation is deterministic: build once (corpora tokenise once)
        seed = (cfg.order_seed * 100_003 + epoch) * 64 + self.rank
        base = make_loader(self.train_ds, self.bundle.inputs, 1, augment=cfg.augment, seed=seed, seq_len=cfg.seq_len)
        self._train_set = (base.dataset, base.collate_fn)
        return self._train_set

    def _epoch_loader(self, epoch: int) -> DataLoader:
        dataset, collate = self._epoch_dataset(epoch)
        batches = epoch_order(len(dataset), self.cfg.batch_size, self.cfg.order_seed, epoch)[: self.micro_per_epoch]
        # An own generator: creating the iterator must not draw from the global RNG (resume replays it).
        return DataLoader(dataset, batch_sampler=shard(batches, self.rank, self.world), collate_fn=collate,
                          num_workers=self.cfg.num_workers, generator=torch.Generator().manual_seed(self.cfg.order_seed))

    def save_checkpoint(self, tag: str) -> Path:
        """Write DIR/checkpoint/step-N-TAG and list it in the run folder's manifest."""
        path = self.checkpoints.save(self.model, self.optimizer, self.scheduler, self.scaler, self.pos, self.cfg, tag)
        if self.accelerator.is_main_process:
            self.folder.record(done=False)
        return path

    # -- training

    def step(self, micro_batches: Sequence[dict[str, Tensor]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns their mean loss."""
        acc, phase = self.accelerator, O.get_objective(self.cfg.stage2).phase(self.pos.step)
        self.module.draw_for_step(self.pos.step)  # the aligned-layers draws of this step, whatever came before
        if self.layer_dropout is not None:
            self.layer_dropout.draw(self.pos.step)  # LayerSkip's skipped blocks of this step, seeded alike
        total = 0.0
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with nullcontext() if last else acc.no_sync(self.model):
                with self.autocast():
                    loss = self.model(to_device(batch, acc.device), phase)
                value = loss.item()
                self._check_finite(value)
                acc.backward(self.scaler.scale(loss / len(micro_batches)))
            total += value
        if self.cfg.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        return total / len(micro_batches)

    def _run_hooks(self) -> None:
        for hook in self.step_hooks:
            hook(self)

    def _check_finite(self, value: float) -> None:
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=self.accelerator.device)
        if self.world > 1:  # every process must stop together, or the others hang in the next all-reduce
            bad = self.accelerator.reduce(bad, "sum")
        if bad.item():
            last = self.checkpoints.latest()
            keep = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
            raise LayerwiseError(f"the loss became {value} at step {self.pos.step} (epoch {self.pos.epoch + 1}): "
                                 f"lower `lr`, set `max_grad_norm` or set `mixed_precision` to no; {keep}")

    def evaluate(self) -> dict[str, list[float]]:
        acc = self.accelerator
        scores = evaluate_layers(self.stack, self.eval_loader, self.bundle.exit_heads, device=acc.device, rank=self.rank,
                                 world=self.world, reduce=(lambda t: acc.reduce(t, "sum")) if self.world > 1 else None,
                                 autocast=self.autocast, metrics=getattr(self.eval_ds, "metrics", None), keep=self._kept)
        return {**scores, "metric": task_metric_name(self.stack.task, getattr(self.eval_ds, "metrics", None))}

    def _final_record(self) -> dict[str, Any]:
        """The record of a run with nothing left to train: the last one logged (so a re-run leaves
        ``metrics.json`` whole), or a fresh evaluation when the log is gone."""
        return self.log.last() or {"epoch": self.pos.epoch, "step": self.pos.step, **self.evaluate()}

    def linear_probe(self) -> dict[str, float]:
        """LP stage (``probe.linear_probe``) on the training set."""
        loader = self._loader(self.train_ds, self.cfg.eval_batch_size or self.cfg.batch_size)
        return linear_probe(self.stack, loader, self.accelerator.device, self.cfg.lp_cv, self.cfg.seed, self.cfg.model)

    def fit(self) -> dict[str, Any]:
        """Train (resuming if a checkpoint exists), log every epoch, save the final model; return its metrics."""
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        t0 = time.perf_counter()
        self.log.start(self.pos.epoch if self._rng is not None else None)
        init_trackers(acc, "train", self.out, jsonable(cfg.model_dump()))  # `log_with`: per-layer scalars per epoch
        try:
            record = self._fit(t0)
        except BaseException:
            self.log.close(failed=True)
            raise
        self.log.close()
        return record

    def _fit(self, t0: float) -> dict[str, Any]:
        cfg, acc = self.cfg, self.accelerator
        if self._rng is not None:
            acc.wait_for_everyone()  # every rank may read the log back in _final_record
            set_rng_state(self._rng)
        record: dict[str, Any] = {}
        if self.objective.linear_probe and not self.pos.lp_done:
            info = self.linear_probe()
            self.pos.lp_done = True
            record = {"epoch": 0, "step": 0, "stage": "lp", **info, **self.evaluate()}
            self.log.append(record)
            if self.objective.then_ft_objective and cfg.epochs:
                self.save_checkpoint("lp")
        if self.objective.trains:
            self._run_hooks()
            record = self._train_epochs(t0) or record
        if not record:
            record = self._final_record()
        if acc.is_main_process:
            self.save_outputs()
            # world_size: how many processes trained (DDP), for a reader and the 2-process test
            atomic_write_text(json.dumps({"command": "train", **record, "world_size": acc.num_processes}, indent=2),
                              self.out / METRICS)
            if self._kept:  # none when a finished run is re-run: its file stays
                atomic_write_text(json.dumps(predictions_record(self._kept, self.stack.task)), self.out / PREDICTIONS)
            self.folder.record()
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
                self._run_hooks()
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
            self.log.append(record)
            pos.epoch, pos.batch, pos.loss_sum, pos.loss_n = pos.epoch + 1, 0, 0.0, 0
            self.save_checkpoint("end")
        return record


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run a training job described by ``cfg``; returns the final evaluation record."""
    return Trainer(cfg).fit()
