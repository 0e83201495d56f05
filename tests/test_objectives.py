"""Objectives against hand-computed float64 references on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.training import objectives as O
from layerwise.errors import LayerwiseError
from layerwise.models import build_own
from layerwise.stack import LayerStack
from layerwise.training import ObjectiveModule, fit_probe, head_inputs, probe_to_linear, readout_linear
from layerwise.checkpoints import make_exit_heads


def tiny(depth: int = 3, num_classes: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    model = build_own({"layerwise_arch": "mlp", "input_dim": 6, "dim": 8, "depth": depth,
                       "num_classes": num_classes, "residual": True})
    stack = LayerStack(model)
    x = torch.randn(5, 6)
    y = torch.tensor([0, 1, 2, 3, 1]) % num_classes
    return stack, {"inputs": x, "labels": y}


def ref_layers(stack, batch):
    """Raw hidden states h¹..hᴸ and per-layer CE, in explicit float64 (LN, Linear, log-sum-exp by hand)."""
    ln, head = stack.readout.norm, stack.readout.head
    g, b = ln.weight.double(), ln.bias.double()
    w, c = head.weight.double(), head.bias.double()
    y = batch["labels"]
    hs = [s.h.double()[:, 0] for s in stack.states(batch)][1:]
    ces = []
    for h in hs:
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        z = (h - mu) / torch.sqrt(var + ln.eps) * g + b
        logits = z @ w.T + c
        lse = torch.log(torch.exp(logits - logits.max(-1, keepdim=True).values).sum(-1)) + logits.max(-1).values
        ces.append((lse - logits[torch.arange(len(y)), y]).mean())
    return hs, torch.stack(ces)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 6, 12])
def test_linear_weights_sum_to_one_and_follow_formula(num_layers):
    w = O.layer_weights(num_layers)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    expected = [2 * ell / (num_layers * (num_layers + 1)) for ell in range(1, num_layers + 1)]
    assert w.tolist() == pytest.approx(expected, abs=1e-15)


def test_uniform_and_explicit_weights():
    assert O.layer_weights(4, "uniform").tolist() == [0.25] * 4
    assert O.layer_weights(3, [1, 1, 2]).tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(LayerwiseError):
        O.layer_weights(3, [1, 2])
    with pytest.raises(LayerwiseError):
        O.layer_weights(3, "quadratic")


def test_standard_and_aligned_match_reference():
    stack, batch = tiny()
    module = ObjectiveModule(stack, None, O.layer_weights(stack.num_layers), beta=1.0)
    _, ces = ref_layers(stack, batch)
    lam = torch.tensor([2 * ell / (3 * 4) for ell in (1, 2, 3)], dtype=torch.float64)
    assert module(batch, "standard").item() == pytest.approx(ces[-1].item(), abs=1e-6)
    assert module(batch, "aligned").item() == pytest.approx((lam * ces).sum().item(), abs=1e-6)
    # The readout is shared: aligned with weights (0, …, 0, 1) is the standard loss.
    one_hot = ObjectiveModule(stack, None, O.layer_weights(3, [0, 0, 1]), beta=1.0)
    assert one_hot(batch, "aligned").item() == pytest.approx(ces[-1].item(), abs=1e-6)


def test_alternation_order_is_aligned_first():
    assert [O.phase("aligned", s) for s in range(5)] == ["aligned", "standard", "aligned", "standard", "aligned"]
    assert [O.phase("multi-exit", s) for s in range(3)] == ["multi-exit", "standard", "multi-exit"]
    assert {O.phase("aligned-joint", s) for s in range(4)} == {"aligned"}
    assert {O.phase("multi-exit-joint", s) for s in range(4)} == {"multi-exit"}
    assert {O.phase("cos-reg", s) for s in range(4)} == {"cos-reg"}
    with pytest.raises(LayerwiseError):
        O.phase("bogus", 0)


def test_cos_reg_value():
    stack, batch = tiny()
    beta = 0.7
    module = ObjectiveModule(stack, None, O.layer_weights(3), beta=beta)
    hs, ces = ref_layers(stack, batch)
    lam = O.layer_weights(3)
    gap = torch.stack([1 - (F.normalize(h, dim=-1) * F.normalize(hs[-1], dim=-1)).sum(-1).mean() for h in hs])
    expected = ces[-1] + beta * (lam * gap).sum()
    assert gap[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert module(batch, "cos-reg").item() == pytest.approx(expected.item(), abs=1e-6)


def test_multi_exit_heads_are_separate():
    stack, batch = tiny()
    heads = make_exit_heads(stack)
    module = ObjectiveModule(stack, heads, O.layer_weights(3), beta=1.0)
    hs = [s.h for s in stack.states(batch)][1:]

    def exit_ces():
        return O.layer_ce(list(heads), hs, None, batch["labels"], "classification").detach()

    before, shared = exit_ces(), ref_layers(stack, batch)[1]
    assert torch.allclose(before.double(), shared, atol=1e-6)  # copies start equal to the shared readout
    with torch.no_grad():
        heads[1].head.weight.add_(0.5)
    after = exit_ces()
    assert after[1] != before[1]
    assert torch.equal(after[[0, 2]], before[[0, 2]])
    assert torch.allclose(ref_layers(stack, batch)[1], shared)  # the model's own readout is untouched
    assert module(batch, "multi-exit").item() == pytest.approx((O.layer_weights(3) * after.double()).sum().item(),
                                                               abs=1e-6)


def test_lm_objective_is_per_token():
    torch.manual_seed(0)
    model = build_own({"layerwise_arch": "gpt", "vocab_size": 11, "max_len": 16, "dim": 16, "depth": 2, "heads": 2})
    stack = LayerStack(model)
    ids = torch.randint(0, 11, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # padding targets are dropped
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    module = ObjectiveModule(stack, None, O.layer_weights(2), beta=1.0)
    ces = []
    for s in list(stack.states(batch))[1:]:
        logits = stack.readout(s.h, s.mask).double()[:, :-1]
        keep = mask[:, 1:].bool()
        ces.append(F.cross_entropy(logits[keep], ids[:, 1:][keep]))
    expected = (O.layer_weights(2) * torch.stack(ces)).sum()
    assert module(batch, "aligned").item() == pytest.approx(expected.item(), abs=1e-5)


def test_layer_ce_swappable_ce():
    stack, batch = tiny()
    hs = [s.h for s in stack.states(batch)][1:]
    calls = []

    def ce(logits, targets):
        calls.append(logits.shape)
        return O.dense_ce(logits, targets)

    O.layer_ce([stack.readout] * 3, hs, None, batch["labels"], "classification", loss=ce)
    assert calls == [torch.Size([5, 4])] * 3  # readout on the pooled token only, never (B, T, C)


def test_probe_binary_and_multiclass_copy_predicts_like_sklearn():
    rng = np.random.default_rng(0)
    for k in (2, 4):
        x = torch.tensor(rng.normal(size=(120, 5)))
        y = (x[:, 0] * 2 + x[:, 1] > 0).long() if k == 2 else torch.as_tensor(rng.integers(0, k, 120))
        clf = fit_probe(x, y, cv=3)
        linear = torch.nn.Linear(5, k).double()
        probe_to_linear(clf, linear)
        with torch.no_grad():
            pred = linear(x).argmax(-1).numpy()
        assert (pred == clf.predict(x.numpy())).all()


def test_lp_head_reaches_sklearn_accuracy():
    from layerwise.data import load_dataset, make_loader
    from layerwise.checkpoints import load_model

    bundle = load_model("mlp-residual")
    ds = load_dataset("digits", "train", limit=400)
    loader = make_loader(ds, bundle.inputs, 100)
    x, y = head_inputs(bundle.stack, loader, torch.device("cpu"))
    assert x.shape == (400, 128)
    clf = fit_probe(x, y, cv=3)
    probe_to_linear(clf, readout_linear(bundle.stack))
    correct = 0
    with torch.no_grad():
        for batch in loader:
            correct += (bundle.stack(batch).argmax(-1) == batch["labels"]).sum().item()
    assert correct / 400 == pytest.approx(clf.score(x.double().numpy(), y.numpy()), abs=1 / 400)
