"""AlignedTrainer: its loss against the wrapped model's own forward (``output_hidden_states=True``) with the
model's own readout applied by formula in float64, and a few real training steps.

References: BERT is post-LN (no final norm); its classifier reads token 0 through the pooler
(dense + tanh) and the classifier Linear. GPT-2's last returned hidden state already went through the final
norm ``ln_f`` (so it is not normed again); the earlier ones are normed here; the LM head is tied to ``wte``.
"""

from __future__ import annotations

import sys

import _refs as ref
import pytest
import torch
from fixtures import ROOT
from transformers import TrainingArguments

from layerwise.checkpoints import load_model
from layerwise.data import load_dataset, make_loader
from layerwise.errors import LayerwiseError
from layerwise.training.hf_trainer import AlignedTrainer


def make_trainer(tmp_path, objective="aligned", steps=3, model="bert-tiny", **trainer_kw):
    bundle = load_model(model, num_classes=2 if model == "bert-tiny" else None)
    ds = load_dataset("sentences", "train")
    collate = make_loader(ds, bundle.inputs, 8).collate_fn
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, logging_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
                             disable_tqdm=True, seed=0)
    trainer = AlignedTrainer(model=bundle.model, args=args, train_dataset=ds, data_collator=collate, objective=objective,
                             **trainer_kw)
    return trainer, bundle, collate([ds[i] for i in range(8)])


def spread_classifier(model):
    """A random BERT's classifier is initialised tiny (std 0.02), so every layer's CE is ≈ ln 2 and the layer
    weighting would hardly show; larger seeded weights make the layers' CEs clearly different."""
    w = model.classifier.weight
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))


def bert_reference(model, batch):
    """Per-layer CE (float64) of BERT's own classifier on token 0 of each hidden state, and the layer-1..L
    [CLS] features, from the model's own forward."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    hs = out.hidden_states[1:]  # layers 1..L (index 0 is the embedding output)
    dense, classifier = model.bert.pooler.dense, model.classifier
    logits = [ref.linear64(torch.tanh(ref.linear64(h[:, 0], dense.weight, dense.bias)), classifier.weight,
                           classifier.bias) for h in hs]
    assert torch.allclose(logits[-1], out.logits.double(), atol=1e-5)  # the formula is the model's own head
    ces = torch.stack([ref.cross_entropy64(z, batch["labels"]) for z in logits])
    return ces, [h[:, 0] for h in hs]


def test_loss_matches_the_models_own_forward(tmp_path):
    trainer, bundle, batch = make_trainer(tmp_path)
    bundle.model.eval()  # no dropout, so the reference and the trainer see the same network
    spread_classifier(bundle.model)
    assert (batch["attention_mask"] == 0).any()  # padded batch: the mask reaches the forward pass
    with torch.no_grad():
        ces, _ = bert_reference(bundle.model, batch)
        got = trainer.compute_loss(bundle.model, batch)
        standard = trainer.layerwise_loss(bundle.model, batch, "standard")[0]
        trainer.state.global_step = 1  # odd steps of the alternating recipe use the standard loss
        odd = trainer.compute_loss(bundle.model, batch)
    lam = ref.linear_layer_weights(len(ces))
    assert len(ces) == 4
    assert abs((lam * ces).sum() - ces[-1]).item() > 1e-2  # layers differ, so the weighting matters
    assert got.item() == pytest.approx((lam * ces).sum().item(), abs=1e-5)
    assert standard.item() == pytest.approx(ces[-1].item(), abs=1e-5)
    assert odd.item() == pytest.approx(ces[-1].item(), abs=1e-5)


def test_uniform_weights_and_cos_reg_match_reference(tmp_path):
    trainer, bundle, batch = make_trainer(tmp_path, objective="aligned-joint", layer_weights="uniform")
    bundle.model.eval()
    spread_classifier(bundle.model)
    beta = 50.0  # random BERT's [CLS] features are close to each other: make their gap count
    cos_trainer = make_trainer(tmp_path, objective="cos-reg", cos_beta=beta)[0]  # the loss is of the model passed
    with torch.no_grad():
        ces, feats = bert_reference(bundle.model, batch)
        trainer.state.global_step = 1  # joint: no alternation
        uniform = trainer.compute_loss(bundle.model, batch)
        cos = cos_trainer.compute_loss(bundle.model, batch)
    assert abs(ces.mean() - (ref.linear_layer_weights(len(ces)) * ces).sum()).item() > 1e-3
    assert uniform.item() == pytest.approx(ces.mean().item(), abs=1e-5)
    gap = torch.stack([1 - ref.mean_cosine64(z, feats[-1]) for z in feats])
    assert (beta * gap[0]).item() > 1e-2
    expected = ces[-1] + beta * (ref.linear_layer_weights(len(ces)) * gap).sum()
    assert cos.item() == pytest.approx(expected.item(), abs=1e-5)


def test_language_model_loss_matches_the_models_own_forward(tmp_path):
    """GPT-2: per-token next-token CE per layer, padding targets excluded; ln_f applied once per layer."""
    bundle = load_model("gpt2-tiny")
    model = bundle.model.eval()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    trainer = AlignedTrainer(model=model, args=args, objective="aligned")
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding on one row
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    ln, w = model.transformer.ln_f, model.lm_head.weight
    with torch.no_grad():  # a non-trivial final norm, so norming twice (or not at all) would show
        g = torch.Generator().manual_seed(1)
        ln.weight.copy_(1 + 0.5 * torch.randn(ln.weight.shape, generator=g))
        ln.bias.copy_(0.5 * torch.randn(ln.bias.shape, generator=g))
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hs = out.hidden_states[1:]
        logits = [ref.linear64(ref.layer_norm64(h, ln.weight, ln.bias, ln.eps), w) for h in hs[:-1]]
        logits.append(ref.linear64(hs[-1], w))  # already normed by the model
        assert torch.allclose(logits[-1], out.logits.double(), atol=1e-5)
        ces = torch.stack([ref.next_token_ce64(z, ids, mask) for z in logits])
        normed_twice = ref.next_token_ce64(ref.linear64(ref.layer_norm64(hs[-1], ln.weight, ln.bias, ln.eps), w),
                                           ids, mask)
        got = trainer.compute_loss(model, batch)
    assert abs(normed_twice - ces[-1]).item() > 1e-3
    assert got.item() == pytest.approx((ref.linear_layer_weights(len(ces)) * ces).sum().item(), abs=1e-5)


def test_trains_a_few_steps(tmp_path):
    trainer, bundle, _ = make_trainer(tmp_path, steps=3)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(0 < x < 5 for x in losses)
    after = bundle.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the optimizer really stepped


def test_bad_objective(tmp_path):
    with pytest.raises(LayerwiseError, match="multi-exit use"):
        make_trainer(tmp_path, objective="multi-exit")


def test_example_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import hf_trainer_aligned
    finally:
        sys.path.pop(0)
    history = hf_trainer_aligned.main(["--steps", "2", "--out", str(tmp_path)])
    assert len(history) == 2
