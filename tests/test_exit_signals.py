"""Readout-free exit signals (hidden-state saturation, the trained exit classifier), ``check_every`` and row
compaction in per-token exit. Models in float64.

References: a greedy loop over Hugging Face's own forward with ``output_hidden_states`` (un-cached, one prompt
at a time; the exit rule and the readout written out in the test), scikit-learn's logistic regression, the same
prompt alone, and per-token exit without compaction (exited rows riding along in the full blocks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.inference import EarlyExitRunner
from layerwise.inference.exit_classifier import (ExitClassifier, exit_features, fit_logistic, load_exit_classifier,
                                                 train_exit_classifier)
from layerwise.inference.policies import POLICIES, make_policy
from layerwise.inference.token_exit import token_exit_generate

PAD = 256
PROMPTS = [[72, 101, 108, 108, 111, 44, 32], [84, 104, 101], [1, 2, 3, 4, 5], [9] * 9]
TAU = {"gpt2-tiny": 0.945, "llama-tiny": 0.88}


@pytest.fixture(scope="module")
def stacks():
    out = {}
    for name in TAU:
        stack = load_model(name).stack
        stack.model.double().eval()
        out[name] = stack
    return out


def _hf_parts(model):
    """(final norm, LM head) of a GPT-2 or Llama model, taken from the model itself."""
    norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm
    return norm, model.lm_head


def _reference(model, prompt: list[int], score, tau: float, hi: int, every: int, steps: int):
    """Greedy per-token exit with full recomputation: each step runs HF's forward on the whole sequence; the
    token leaves at the first layer ℓ ∈ {1, 1 + every, …} with score(hˡ, hˡ⁻¹, ℓ) ≥ τ, else at ``hi``."""
    norm, head = _hf_parts(model)
    seq, tokens, layers = list(prompt), [], []
    for _ in range(steps):
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
        h = [x[0, -1] for x in hs[:hi + 1]]  # h⁰..h^hi; HF's h^L is normed, hi < L avoids it
        ell = next((e for e in range(1, hi) if (e - 1) % every == 0 and score(h[e], h[e - 1], e) >= tau), hi)
        with torch.no_grad():
            tokens.append(int(head(norm(h[ell])).argmax()))
        layers.append(ell)
        seq.append(tokens[-1])
    return tokens, layers


def _classifier(stack, seed: int = 0) -> ExitClassifier:
    g = torch.Generator().manual_seed(seed)
    return ExitClassifier(torch.randn(stack.num_layers, stack.hidden_size, generator=g, dtype=torch.float64),
                          torch.randn(stack.num_layers, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", list(TAU))
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("signal", ["saturation", "classifier"])
def test_readout_free_exit_equals_the_rule_applied_to_hf_hidden_states(stacks, name, every, signal):
    stack, hi = stacks[name], stacks[name].num_layers - 1
    if signal == "saturation":
        policy, tau = make_policy("saturation", TAU[name], 1, hi, check_every=every), TAU[name]
        score = lambda h, prev, ell: float(F.cosine_similarity(h, prev, dim=0))  # noqa: E731
    else:
        clf = _classifier(stack)
        policy, tau = make_policy("classifier", 0.5, 1, hi, check_every=every, classifier=clf), 0.5
        score = lambda h, prev, ell: float(torch.sigmoid(clf.weight[ell - 1] @ h + clf.bias[ell - 1]))  # noqa: E731
    seen = set()
    for prompt in PROMPTS:
        out = token_exit_generate(stack, [prompt], policy, kv_fill="recompute", max_new_tokens=8, pad_token_id=PAD)
        tokens, layers = _reference(stack.model, prompt, score, tau, hi, every, 8)
        assert out.generated.tokens[0].tolist() == tokens
        assert out.exit_layers[0].tolist() == layers
        seen |= set(layers)
    assert len(seen) >= 2, "the threshold should give different exit layers"


@pytest.mark.parametrize("name", list(TAU))
@pytest.mark.parametrize("policy", ["confidence", "entropy", "patience", "saturation", "classifier"])
def test_row_compaction_changes_no_token_and_each_row_generates_what_it_generates_alone(stacks, name, policy):
    stack = stacks[name]
    thresholds = {"confidence": 0.02, "entropy": 5.5, "patience": 2, "saturation": TAU[name], "classifier": 0.5}
    extra = {"classifier": _classifier(stack)} if policy == "classifier" else {}
    pol = make_policy(policy, thresholds[policy], **extra)
    runs = {c: token_exit_generate(stack, PROMPTS, pol, max_new_tokens=10, pad_token_id=PAD, compact=c)
            for c in (True, False)}
    assert torch.equal(runs[True].generated.tokens, runs[False].generated.tokens)
    assert torch.equal(runs[True].exit_layers, runs[False].exit_layers)
    for r, prompt in enumerate(PROMPTS):
        alone = token_exit_generate(stack, [prompt], pol, max_new_tokens=10, pad_token_id=PAD)
        assert alone.generated.tokens[0].tolist() == runs[True].generated.tokens[r].tolist()
        assert alone.exit_layers[0].tolist() == runs[True].exit_layers[r].tolist()
    assert POLICIES[policy] is type(pol)


def test_exit_features_label_agreement_with_the_last_layer_from_hf_hidden_states(stacks):
    stack = stacks["gpt2-tiny"]
    ids = torch.tensor([PROMPTS[0][:5], PROMPTS[2]])
    x, y = exit_features(stack, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    norm, head = _hf_parts(stack.model)
    with torch.no_grad():
        hs = stack.model(input_ids=ids, output_hidden_states=True).hidden_states
        last = head(hs[-1]).argmax(-1).flatten()  # HF's h^L is already normed
        for ell in range(1, stack.num_layers):
            torch.testing.assert_close(x[ell - 1], hs[ell].flatten(0, 1).float(), rtol=0, atol=1e-6)
            ref = (head(norm(hs[ell])).argmax(-1).flatten() == last).float()
            assert torch.equal(y[ell - 1], ref)
    assert bool(y[-1].all())


def test_fit_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 400, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0]) + 2.0
    y = (x[..., 0] - 0.5 * x[..., 1] + torch.randn(2, 400, generator=g, dtype=torch.float64) > 1.0).double()
    w, b = fit_logistic(x.float(), y.float(), steps=500, weight_decay=0.0)
    for ell in range(2):
        ref = LogisticRegression(C=1e9, max_iter=5000, tol=1e-10).fit(x[ell].numpy(), y[ell].numpy())
        torch.testing.assert_close(w[ell].double(), torch.from_numpy(ref.coef_[0]), rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(b[ell].double(), torch.from_numpy(ref.intercept_)[0], rtol=2e-2, atol=2e-3)


def test_trained_classifier_round_trips_and_refuses_to_overwrite(stacks, tmp_path):
    stack = stacks["llama-tiny"]
    ids = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(1))
    clf = train_exit_classifier(stack, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], corpus="random")
    clf.save(tmp_path)
    back = load_exit_classifier(tmp_path)
    assert torch.equal(back.weight, clf.weight.float()) and torch.equal(back.bias, clf.bias.float())
    assert back.meta["tokens"] == 96 and back.meta["agreement_with_last_layer"][-1] == 1.0
    with pytest.raises(LayerwiseError, match="`overwrite`"):
        clf.save(tmp_path)


def test_bad_input(stacks):
    stack = stacks["gpt2-tiny"]
    with pytest.raises(LayerwiseError, match="trained exit classifier"):
        make_policy("classifier", 0.5)
    with pytest.raises(LayerwiseError, match="`check_every`"):
        make_policy("saturation", 0.9, check_every=0)
    with pytest.raises(LayerwiseError, match="out of range"):
        make_policy("saturation", 1.5)
    wrong = ExitClassifier(torch.zeros(3, stack.hidden_size), torch.zeros(3))
    with pytest.raises(LayerwiseError, match="trained for 3 layers"):
        token_exit_generate(stack, PROMPTS, make_policy("classifier", 0.5, classifier=wrong))
    with pytest.raises(LayerwiseError, match="language models only"):
        EarlyExitRunner(load_model("vit-tiny").stack, make_policy("saturation", 0.9))


@pytest.mark.parametrize("every", [1, 2, 3])
def test_check_every_in_simulation_equals_the_rule_by_hand(every):
    """Exit at the first evaluated layer ℓ ∈ {2, 2 + k, …} ∪ {6} whose max softmax reaches τ, computed in the
    test from the probabilities; ``simulate`` (and so the classification runner and calibration) must agree."""
    from layerwise.inference import simulate

    logits = torch.randn(6, 200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    top = logits.softmax(-1).amax(-1)
    policy = make_policy("confidence", 0.7, min_layer=2, check_every=every)
    got = simulate(policy, logits).layer
    evaluated = [ell for ell in range(2, 7) if (ell - 2) % every == 0 or ell == 6]
    ref = [next((ell for ell in evaluated if top[ell - 1, i] >= 0.7), 6) for i in range(200)]
    assert got.tolist() == ref
    assert len(set(ref)) >= 2
