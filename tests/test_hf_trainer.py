"""AlignedTrainer: runs a few steps and its loss equals objectives.aligned through the layer stack."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from layerwise.training import objectives as O
from layerwise.data import load_dataset, make_loader
from layerwise.errors import LayerwiseError
from layerwise.training.hf_trainer import AlignedTrainer
from layerwise.checkpoints import load_model

ROOT = Path(__file__).resolve().parents[1]


def make_trainer(tmp_path, objective="aligned", steps=3):
    bundle = load_model("bert-tiny", num_classes=2)
    ds = load_dataset("sentences", "train")
    collate = make_loader(ds, bundle.inputs, 8).collate_fn
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, logging_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
                             disable_tqdm=True, seed=0)
    trainer = AlignedTrainer(model=bundle.model, args=args, train_dataset=ds, data_collator=collate, objective=objective)
    return trainer, bundle, collate([ds[i] for i in range(8)])


def test_loss_matches_objectives_aligned(tmp_path):
    trainer, bundle, batch = make_trainer(tmp_path)
    bundle.model.eval()  # no dropout, so both paths see the same network
    stack = bundle.stack
    with torch.no_grad():
        hs = stack.hidden_states(batch)[1:]
        ces = O.layer_ce([stack.readout] * len(hs), hs, batch["attention_mask"], batch["labels"], stack.task)
        expected = O.aligned(ces, O.layer_weights(len(hs)))
        got = trainer.compute_loss(bundle.model, batch)
        standard = trainer.layerwise_loss(bundle.model, batch, "standard")[0]
    assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    assert standard.item() == pytest.approx(ces[-1].item(), abs=1e-5)
    trainer.state.global_step = 1  # odd steps of the alternating recipe use the standard loss
    with torch.no_grad():
        assert trainer.compute_loss(bundle.model, batch).item() == pytest.approx(ces[-1].item(), abs=1e-5)


def test_trains_a_few_steps(tmp_path):
    trainer, _, _ = make_trainer(tmp_path, steps=3)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(0 < x < 5 for x in losses)


def test_cos_reg_and_bad_objective(tmp_path):
    trainer, bundle, batch = make_trainer(tmp_path, objective="cos-reg")
    bundle.model.eval()
    with torch.no_grad():
        assert torch.isfinite(trainer.compute_loss(bundle.model, batch))
    with pytest.raises(LayerwiseError):
        make_trainer(tmp_path, objective="multi-exit")


def test_example_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import hf_trainer_aligned
    finally:
        sys.path.pop(0)
    history = hf_trainer_aligned.main(["--steps", "2", "--out", str(tmp_path)])
    assert len(history) == 2
