"""Objectives against hand-computed float64 references on tiny models.

The references never go through the layer stack: hidden states are computed from the weights (own MLP)
or with the model's own modules (own GPT), and the readout/CE are written out in float64 (``_refs``).
"""

from __future__ import annotations

import _refs as ref
import numpy as np
import pytest
import torch
from fixtures import data_batches, tiny_mlp

from layerwise.checkpoints import make_exit_heads
from layerwise.errors import LayerwiseError
from layerwise.training.losses import dense_ce, layer_losses
from layerwise.models import build_own
from layerwise.stack import LayerStack
from layerwise.training import ObjectiveModule, fit_probe, head_inputs, probe_to_linear, readout_linear
from layerwise.training import objectives as O


def readout_ce64(norm, head, h, y):
    """CE(head(LN(h)), y) in float64."""
    return ref.cross_entropy64(ref.linear64(ref.layer_norm64(h, norm.weight, norm.bias, norm.eps), head.weight,
                                            head.bias), y)


def ref_layers(model, batch):
    """Raw hidden states h¹..hᴸ (B, D) and the shared readout's per-layer CE, all in explicit float64."""
    with torch.no_grad():
        hs = ref.own_mlp_hidden64(model, batch["inputs"])[1:]
        return hs, torch.stack([readout_ce64(model.norm, model.head, h, batch["labels"]) for h in hs])


def test_reference_reproduces_the_model_forward():
    """The float64 reference is the model: its last layer through the readout gives the model's own logits."""
    model, _, batch = tiny_mlp()
    with torch.no_grad():
        h = ref.own_mlp_hidden64(model, batch["inputs"])[-1]
        logits = ref.linear64(ref.layer_norm64(h, model.norm.weight, model.norm.bias, model.norm.eps),
                              model.head.weight, model.head.bias)
        assert torch.allclose(logits, model(**batch).double(), atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 6, 12])
def test_linear_weights_sum_to_one_and_follow_formula(num_layers):
    w = O.layer_weights(num_layers)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    expected = [2 * ell / (num_layers * (num_layers + 1)) for ell in range(1, num_layers + 1)]
    assert w.tolist() == pytest.approx(expected, abs=1e-15)


def test_uniform_and_explicit_weights():
    assert O.layer_weights(4, "uniform").tolist() == [0.25] * 4
    assert O.layer_weights(3, [1, 1, 2]).tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(LayerwiseError, match=r"need 3 non-negative numbers .*got \[1, 2\]"):
        O.layer_weights(3, [1, 2])
    with pytest.raises(LayerwiseError, match="unknown layer weights 'quadratic'"):
        O.layer_weights(3, "quadratic")


def test_standard_and_aligned_match_reference():
    model, stack, batch = tiny_mlp()
    module = ObjectiveModule(stack, None, O.layer_weights(stack.num_layers), beta=1.0)
    _, ces = ref_layers(model, batch)
    lam = ref.linear_layer_weights(3)
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
    with pytest.raises(LayerwiseError, match="unknown objective 'bogus'"):
        O.phase("bogus", 0)


def test_cos_reg_value():
    model, stack, batch = tiny_mlp()
    beta = 0.7
    module = ObjectiveModule(stack, None, O.layer_weights(3), beta=beta)
    hs, ces = ref_layers(model, batch)
    gap = torch.stack([1 - ref.mean_cosine64(h, hs[-1]) for h in hs])
    expected = ces[-1] + beta * (ref.linear_layer_weights(3) * gap).sum()
    assert gap[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert gap[0].item() > 1e-3  # the regulariser is not trivially zero here
    assert module(batch, "cos-reg").item() == pytest.approx(expected.item(), abs=1e-6)


def test_multi_exit_heads_are_separate():
    model, stack, batch = tiny_mlp()
    heads = make_exit_heads(stack)
    module = ObjectiveModule(stack, heads, O.layer_weights(3), beta=1.0)
    y = batch["labels"]
    hs, shared = ref_layers(model, batch)
    shared_weights = {k: v.clone() for k, v in stack.readout.state_dict().items()}

    def exit_ces():  # the library: exit head ℓ on layer ℓ, through the stack
        with torch.no_grad():
            return layer_losses(list(heads), [s.h for s in stack.states(batch)][1:], None, y, "classification").double()

    def exit_ces64():  # the reference: each head's own weights on the float64 hidden states
        with torch.no_grad():
            return torch.stack([readout_ce64(head.norm, head.head, h, y) for head, h in zip(heads, hs)])

    before = exit_ces()
    assert torch.allclose(before, shared, atol=1e-6)  # copies start equal to the shared readout
    with torch.no_grad():
        # Move one class row of head 2 along a random direction. (Adding one constant to every weight would
        # shift all logits equally and leave the CE unchanged.)
        g = torch.Generator().manual_seed(1)
        heads[1].head.weight[2] += 2.0 * torch.randn(heads[1].head.weight.shape[1], generator=g)
    after, want = exit_ces(), exit_ces64()
    assert after[1].item() == pytest.approx(want[1].item(), abs=1e-6)
    assert abs(want[1] - shared[1]).item() > 0.05  # the perturbation really changed this head's CE
    assert torch.equal(after[[0, 2]], before[[0, 2]])  # the other heads are separate copies
    assert torch.allclose(want[[0, 2]], shared[[0, 2]], atol=1e-12)
    assert all(torch.equal(v, shared_weights[k]) for k, v in stack.readout.state_dict().items())
    lam = ref.linear_layer_weights(3)
    assert module(batch, "multi-exit").item() == pytest.approx((lam * want).sum().item(), abs=1e-6)
    assert module(batch, "standard").item() == pytest.approx(shared[-1].item(), abs=1e-6)  # shared readout


def test_lm_objective_is_per_token():
    torch.manual_seed(0)
    model = build_own({"layerwise_arch": "gpt", "vocab_size": 11, "max_len": 16, "dim": 16, "depth": 2, "heads": 2})
    model.eval()
    stack = LayerStack(model)
    ids = torch.randint(0, 11, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # padding targets are dropped
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    module = ObjectiveModule(stack, None, O.layer_weights(2), beta=1.0)
    with torch.no_grad():
        # Hidden states from the model's own modules (its forward is embed → blocks → norm → head).
        h, hs = model.embed(batch), []
        for block in model.blocks:
            h = block(h)
            hs.append(h)
        norm = model.norm
        logits = [ref.linear64(ref.layer_norm64(h, norm.weight, norm.bias, norm.eps), model.head.weight) for h in hs]
        assert torch.allclose(logits[-1], model(input_ids=ids).double(), atol=1e-5)
        ces = torch.stack([ref.next_token_ce64(z, ids, mask) for z in logits])
        unmasked = ref.next_token_ce64(logits[0], ids)
        got = module(batch, "aligned").item()
    assert abs(unmasked - ces[0]).item() > 1e-3  # the mask matters for this batch
    assert got == pytest.approx((ref.linear_layer_weights(2) * ces).sum().item(), abs=1e-5)


def test_layer_losses_swappable_ce():
    _, stack, batch = tiny_mlp()
    hs = [s.h for s in stack.states(batch)][1:]
    calls = []

    def ce(logits, targets):
        calls.append(logits.shape)
        return dense_ce(logits, targets)

    layer_losses([stack.readout] * 3, hs, None, batch["labels"], "classification", loss=ce)
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
    from layerwise.checkpoints import load_model

    bundle = load_model("mlp-residual")
    batches = data_batches("digits", bundle.inputs, "train", limit=400, batch_size=100)
    x, y = head_inputs(bundle.stack, batches, torch.device("cpu"))
    assert x.shape == (400, 128)
    clf = fit_probe(x, y, cv=3)
    probe_to_linear(clf, readout_linear(bundle.stack))
    correct = 0
    with torch.no_grad():  # the model's own forward now ends in the probe's weights
        for batch in batches:
            correct += (bundle.model(inputs=batch["inputs"]).argmax(-1) == batch["labels"]).sum().item()
    assert correct / 400 == pytest.approx(clf.score(x.double().numpy(), y.numpy()), abs=1 / 400)
