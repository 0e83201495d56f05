"""Aligned training with a Hugging Face Trainer in two lines (offline, a few CPU steps).

    python examples/hf_trainer_aligned.py --model bert-tiny --steps 4
    python examples/hf_trainer_aligned.py --model minilm --steps 20

The two lines: import ``AlignedTrainer`` and pass ``objective="aligned"`` where you built a ``Trainer``.
"""

from __future__ import annotations

import argparse
import tempfile

from transformers import TrainingArguments

from layerwise.data import load_dataset, make_loader
from layerwise.checkpoints import load_model
from layerwise.training.hf_trainer import AlignedTrainer  # line 1


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bert-tiny")
    p.add_argument("--objective", default="aligned")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    bundle = load_model(a.model, num_classes=2)
    ds = load_dataset("sentences", "train")
    collate = make_loader(ds, bundle.inputs, a.batch_size).collate_fn  # tokenises {"text", "label"} items
    args = TrainingArguments(output_dir=a.out or tempfile.mkdtemp(prefix="aligned-"), max_steps=a.steps,
                             per_device_train_batch_size=a.batch_size, learning_rate=5e-5, logging_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
                             disable_tqdm=True, seed=0)
    trainer = AlignedTrainer(model=bundle.model, args=args, train_dataset=ds, data_collator=collate,
                             objective=a.objective)  # line 2
    trainer.train()
    history = [h for h in trainer.state.log_history if "loss" in h]
    for h in history:
        print(f"step {h['step']}: loss {h['loss']:.4f}")
    return history


if __name__ == "__main__":
    main()
