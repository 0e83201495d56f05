"""The chunked aligned LM loss (``training/lm_loss.py``) against the naive computation, in float64.

Reference: Σ_ℓ λ_ℓ · mean next-token CE of head(norm(hˡ)) written out with the formulas of ``_refs``
(LayerNorm, Linear, log-sum-exp CE) on full logits, its gradients by autograd; targets dropped where the
attention mask is 0 or the label is −100. The trainer and ``AlignedTrainer`` are checked against the same
formula on the model's own hidden states.
"""

from __future__ import annotations

import _refs as ref
import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.training.losses import layer_losses
from layerwise.training import objectives as O
from layerwise.training.lm_loss import chunked_lm_loss

B, T, L = 3, 9, 3


def rms_norm64(x, weight, eps):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def reference_logits(readout, h):
    """head(norm(h)) in float64, by formula (LayerNorm or Llama's RMSNorm; tied or untied head)."""
    norm, head = readout.norm, readout.head
    if isinstance(norm, torch.nn.LayerNorm):
        x = ref.layer_norm64(h, norm.weight, norm.bias, norm.eps)
    else:
        x = rms_norm64(h, norm.weight, norm.variance_epsilon)
    return ref.linear64(x, head.weight, head.bias)


def reference_loss(readouts, hs, mask, labels, weights):
    """Σ_ℓ w_ℓ mean CE over the kept next-token targets (mask at t+1, label ≠ −100)."""
    keep = mask[:, 1:].bool() & (labels[:, 1:] != -100)
    ces = [ref.cross_entropy64(reference_logits(r, h)[:, :-1][keep], labels[:, 1:][keep]) for r, h in zip(readouts, hs)]
    return (weights * torch.stack(ces)).sum()


def batch(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    labels[0, 4] = labels[2, 7] = -100  # ignored targets (Hugging Face collators)
    return mask, labels


def spread(readout, seed=1):
    """Non-trivial norm parameters, so their gradients and a wrong norm would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        readout.norm.weight.copy_(1 + 0.5 * torch.randn(readout.norm.weight.shape, generator=g, dtype=torch.float64))
        if getattr(readout.norm, "bias", None) is not None:
            readout.norm.bias.copy_(0.5 * torch.randn(readout.norm.bias.shape, generator=g, dtype=torch.float64))


def readout64(name):
    stack = load_model(name).stack.double()
    spread(stack.readout)
    return stack


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# LayerNorm + tied head, RMSNorm + untied head; 4 and 7 do not divide the 18 targets; None: one chunk
@pytest.mark.parametrize("name,chunk", [("gpt-tiny", 1), ("gpt-tiny", 4), ("gpt-tiny", 7), ("gpt-tiny", None),
                                        ("llama-tiny", 7), ("llama-tiny", None)])
def test_chunked_equals_naive_values_and_gradients(name, chunk):
    stack = readout64(name)
    r, vocab, d = stack.readout, stack.readout.head.out_features, stack.hidden_size
    mask, labels = batch(vocab)
    g = torch.Generator().manual_seed(2)
    hs = [torch.randn(B, T, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(L)]
    w = ref.linear_layer_weights(L)
    params = [p for p in r.parameters()]
    expected = reference_loss([r] * L, hs, mask, labels, w)
    want = grads(expected, hs + params)
    got = chunked_lm_loss([r] * L, hs, mask, labels, w, chunk_size=chunk)
    have = grads(got, hs + params)
    assert got.dtype == torch.float64
    assert abs(got - expected).item() < 1e-6
    for a, b in zip(have, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert have[0][1, 5:].abs().max() == 0  # padding positions (and the last) give no gradient
    # the library's naive path (full logits per layer) gives the same number
    naive = O.aligned(layer_losses([r] * L, hs, mask, labels, "lm", loss=F.cross_entropy), w)
    assert abs(got - naive).item() < 1e-6


def test_separate_readouts_accumulate_their_own_gradients():
    """Multi-exit: an own readout per layer, one of them serving two layers."""
    stack = readout64("gpt-tiny")
    r1 = stack.readout
    r2 = load_model("gpt-tiny").stack.readout.double()
    spread(r2, seed=3)
    mask, labels = batch(r1.head.out_features)
    g = torch.Generator().manual_seed(4)
    hs = [torch.randn(B, T, stack.hidden_size, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    readouts, w = [r1, r2, r1], torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    params = list(r1.parameters()) + list(r2.parameters())
    want = grads(reference_loss(readouts, hs, mask, labels, w), hs + params)
    have = grads(chunked_lm_loss(readouts, hs, mask, labels, w, chunk_size=5), hs + params)
    for a, b in zip(have, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_without_gradients_returns_the_value():
    stack = readout64("gpt-tiny")
    r = stack.readout
    mask, labels = batch(r.head.out_features)
    hs = [torch.randn(B, T, stack.hidden_size, dtype=torch.float64) for _ in range(2)]
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    with torch.no_grad():
        expected = reference_loss([r] * 2, hs, mask, labels, w)
        got = chunked_lm_loss([r] * 2, hs, mask, labels, w, chunk_size=3)
    assert not got.requires_grad and abs(got - expected).item() < 1e-6


def test_trainer_module_gradients_match_the_formula():
    """ObjectiveModule (the trainer's loss) on gpt-tiny in float64: the aligned loss and every parameter's
    gradient equal the formula applied to the model's own hidden states."""
    bundle = load_model("gpt-tiny")
    stack = bundle.stack.double()
    spread(stack.readout)
    mask, labels = batch(stack.readout.head.out_features)
    labels[labels < 0] = 0  # the trainer's corpora carry no ignore labels; the mask drops padding
    inputs = {"input_ids": labels, "attention_mask": mask, "labels": labels}
    stack.eval()
    w = O.layer_weights(stack.num_layers)
    module = O.ObjectiveModule(stack, None, w, beta=1.0, lm_loss="chunked")
    params = [p for p in stack.parameters()]
    got = module(inputs, "aligned")
    have = grads(got, params)
    hs = [s.h for s in stack.states(inputs)][1:]
    expected = reference_loss([stack.readout] * len(hs), hs, mask, labels, w.double())
    want = grads(expected, params)
    assert abs(got - expected).item() < 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(have, want)) < 1e-6


def test_bf16_autocast_matches_the_naive_loss():
    """Under bf16 autocast the chunks' logits are bf16 and summed in float32, as ``dense_ce`` does."""
    stack = load_model("gpt-tiny").stack
    mask, labels = batch(stack.readout.head.out_features)
    labels[labels < 0] = 0
    inputs = {"input_ids": labels, "attention_mask": mask, "labels": labels}
    w = O.layer_weights(stack.num_layers)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = O.ObjectiveModule(stack, None, w, 1.0, lm_loss="chunked")(inputs, "aligned")
        naive = O.ObjectiveModule(stack, None, w, 1.0, lm_loss="naive")(inputs, "aligned")
    assert got.dtype == torch.float32 and abs(got - naive).item() < 1e-3
    got.backward()
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters())


def test_trainer_runs_an_aligned_lm_step_with_the_chunked_loss(tmp_path):
    """One optimizer step of the trainer on gpt-tiny: chunked (the default) and naive give the same loss,
    and the step changes the weights."""
    from layerwise.training import Trainer, resolve_config

    text = tmp_path / "corpus.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    losses = {}
    for lm_loss in ("chunked", "naive"):
        cfg = resolve_config(model="gpt-tiny", data=str(text), objective="aligned-joint", depth=2, seq_len=32,
                             batch_size=8, epochs=1, out=str(tmp_path / lm_loss), progress=False, cpu=True,
                             lm_loss=None if lm_loss == "chunked" else lm_loss)
        trainer = Trainer(cfg)
        assert trainer.module.chunked == (lm_loss == "chunked")
        before = [p.detach().clone() for p in trainer.stack.parameters()]
        losses[lm_loss] = trainer.step([next(iter(trainer._epoch_loader(0)))])
        assert all(not torch.equal(a, p) for a, p in zip(before, trainer.stack.parameters()) if p.requires_grad)
    assert 0 < losses["chunked"] < 10
    assert losses["chunked"] == pytest.approx(losses["naive"], abs=1e-5)


def test_aligned_trainer_gradients_match_the_formula(tmp_path):
    """GPT-2 through the Hugging Face Trainer: layer L's pre-norm state comes from the final norm's input,
    so ln_f is applied once per layer; loss and gradients equal the formula in float64."""
    from layerwise.training.hf_trainer import AlignedTrainer

    model = load_model("gpt2-tiny").model.double().eval()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    trainer = AlignedTrainer(model=model, args=args, objective="aligned-joint")
    ln, lm_head = model.transformer.ln_f, model.lm_head
    mask, labels = batch(lm_head.out_features)
    ids = labels.clamp_min(0)
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        ln.weight.copy_(1 + 0.5 * torch.randn(ln.weight.shape, generator=g, dtype=torch.float64))
    params = [p for p in model.parameters()]
    got = trainer.compute_loss(model, inputs)
    have = grads(got, params)
    captured = []
    handle = ln.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    handle.remove()
    hs = list(out.hidden_states[1:-1]) + captured  # the returned last state is already normed
    readout = trainer.stack_for(model).readout
    expected = reference_loss([readout] * len(hs), hs, mask, labels, ref.linear_layer_weights(len(hs)))
    want = grads(expected, params)
    assert abs(got - expected).item() < 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(have, want)) < 1e-6


def test_bad_input():
    stack = readout64("gpt-tiny")
    h = torch.zeros(1, 4, stack.hidden_size, dtype=torch.float64)
    labels = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(LayerwiseError, match="one of each per layer"):
        chunked_lm_loss([stack.readout] * 2, [h], None, labels, [1.0])
    with pytest.raises(LayerwiseError, match="per-token readout"):
        chunked_lm_loss([load_model("vit-tiny").stack.readout], [h], None, labels, [1.0])
    with pytest.raises(LayerwiseError, match="unknown LM loss"):
        O.ObjectiveModule(stack, None, O.layer_weights(stack.num_layers), beta=1.0, lm_loss="fused")
