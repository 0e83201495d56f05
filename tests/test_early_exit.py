"""Early exit: policies against hand-computed rules, the runner against the full and truncated models,
compaction order (batched = one by one), multi-exit heads, validation, and transfer and shift accuracy."""

from __future__ import annotations

import math

import _refs as ref
import pytest
import torch
import torch.nn.functional as F
from fixtures import data_batches, logits_of, train_aligned

from layerwise.checkpoints import load_model, make_bundle, make_exit_heads, truncate
from layerwise.data import materialize, model_inputs
from layerwise.errors import LayerwiseError
from layerwise.evaluation import layer_logits
from layerwise.inference import (
    ConfidencePolicy,
    EarlyExitRunner,
    EntropyPolicy,
    ExitResult,
    PatiencePolicy,
    layer_speedup,
    make_policy,
    simulate,
)
from layerwise.models import build_own


@pytest.fixture(scope="module")
def aligned_mlp():
    bundle = load_model("mlp-residual", num_classes=10)
    train_aligned(bundle)
    return bundle


@pytest.fixture(scope="module")
def digits_batches():
    return data_batches("digits", load_model("mlp-residual").inputs, limit=96)


def one_by_one(batches):
    return [{k: v[i:i + 1] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]


def spread_threshold(bundle, batches) -> float:
    """A confidence threshold strictly between observed values, near the median, so exits spread out."""
    conf = layer_logits(bundle.stack, batches, bundle.exit_heads).softmax(-1).max(-1).values
    first = conf[0].sort().values  # about a third exits at layer 1, the rest later
    i = 2 * len(first) // 3
    return float(first[i] + first[i + 1]) / 2


# ---------------------------------------------------------------- policies


LOGITS = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 9.0, 1.0]])


def test_confidence_matches_hand_computed_softmax():
    e = math.exp
    p_max = [e(4) / (e(4) + 2), e(1) / (2 * e(1) + 1), 1 / 3, e(9) / (e(9) + 1 + e(1))]
    for tau in (0.3, 0.5, 0.9, 0.999):
        d = ConfidencePolicy(tau).decide(LOGITS, {})
        assert d.exit.tolist() == [p >= tau for p in p_max]
        assert torch.allclose(d.confidence, torch.tensor(p_max))
    assert ConfidencePolicy(1.0).decide(LOGITS, {}).exit.tolist() == [False] * 4  # τ = 1: never early
    assert ConfidencePolicy(0.9).decide(LOGITS, {}).prediction.tolist()[0] == 0


def test_entropy_matches_hand_computed():
    def entropy(row):
        p = [math.exp(v) for v in row]
        p = [v / sum(p) for v in p]
        return -sum(v * math.log(v) for v in p if v > 0)

    hs = [entropy(r) for r in LOGITS.tolist()]
    for tau in (0.0, 0.2, 0.8, math.log(3) - 1e-6, math.log(3) + 1e-6):
        assert EntropyPolicy(tau).decide(LOGITS, {}).exit.tolist() == [h <= tau for h in hs]


def test_patience_counts_consecutive_equal_argmax():
    pol = PatiencePolicy(2)
    memory = pol.start(3, torch.device("cpu"))
    seq = [torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]), torch.tensor([1, 2, 2])]
    exits = [pol.decide(F.one_hot(c, 3).float() * 5, memory).exit.tolist() for c in seq]
    assert exits == [[False, False, False], [True, False, True], [False, True, True]]
    assert memory["streak"].tolist() == [1, 2, 3]
    assert PatiencePolicy(1).decide(LOGITS, PatiencePolicy(1).start(4, torch.device("cpu"))).exit.all()


@pytest.mark.parametrize("make,message", [
    (lambda: ConfidencePolicy(0.0), r"confidence threshold 0\.0 out of range"),
    (lambda: ConfidencePolicy(1.01), r"confidence threshold 1\.01 out of range"),
    (lambda: EntropyPolicy(-0.1), r"entropy threshold -0\.1 out of range"),
    (lambda: EntropyPolicy(float("nan")), r"entropy threshold nan is not a finite number"),
    (lambda: PatiencePolicy(0), r"patience k=0 out of range"),
    (lambda: PatiencePolicy(1.5), r"patience k=1\.5 out of range"),
    (lambda: ConfidencePolicy(0.9, min_layer=4, max_layer=2), r"min_layer=4 > max_layer=2"),
    (lambda: ConfidencePolicy(0.9, min_layer=0), r"min_layer=0: exit layers start at 1"),
    (lambda: make_policy("greedy", 0.5), r"unknown exit policy 'greedy'"),
])
def test_bad_policy_arguments(make, message):
    with pytest.raises(LayerwiseError, match=message):
        make()


def test_policy_checked_against_model():
    mlp = load_model("mlp-residual").stack  # 8 layers
    for bad, message in ((PatiencePolicy(9), r"k=9 > 8 layers"),
                         (ConfidencePolicy(0.9, max_layer=9), r"exit layers 1\.\.9 out of range"),
                         (ConfidencePolicy(0.9, min_layer=9), r"exit layers 9\.\.8 out of range")):
        with pytest.raises(LayerwiseError, match=message):
            bad.check(mlp)
    regression = make_bundle("reg", build_own({"layerwise_arch": "mlp", "num_classes": 1}), load_model("mlp-residual").inputs)
    lm = load_model("gpt-tiny").stack
    for stack, message in ((regression.stack, "has a regression head"), (lm, "this model's task is 'lm'")):
        for pol in (ConfidencePolicy(0.9), EntropyPolicy(0.1), PatiencePolicy(2)):
            with pytest.raises(LayerwiseError, match=f"the {pol.name} policy needs .*{message}"):
                EarlyExitRunner(stack, pol)


def test_layer_speedup_formula():
    assert layer_speedup([0, 0, 0, 4]) == 1.0
    assert layer_speedup([4, 0, 0, 0]) == 4.0
    assert layer_speedup([1, 0, 1, 2]) == pytest.approx(4 * 4 / (1 + 3 + 8))


# ---------------------------------------------------------------- the runner


def test_no_early_exit_equals_full_model(aligned_mlp, digits_batches):
    runner = EarlyExitRunner(aligned_mlp.stack, ConfidencePolicy(1.0))
    conf = layer_logits(aligned_mlp.stack, digits_batches).softmax(-1).max(-1).values
    assert conf[:-1].max() < 1.0  # so τ = 1 never triggers before L here
    out = runner.run(digits_batches)
    with torch.inference_mode():
        full = torch.cat([aligned_mlp.model(**model_inputs(b)) for b in digits_batches])
    assert torch.equal(out.prediction, full.argmax(-1))
    assert (out.layer == aligned_mlp.stack.num_layers).all()
    assert torch.allclose(out.confidence, full.softmax(-1).max(-1).values)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_forced_exit_equals_truncated_model(aligned_mlp, digits_batches, k):
    out = EarlyExitRunner(aligned_mlp.stack, ConfidencePolicy(0.5, min_layer=k, max_layer=k)).run(digits_batches)
    cut = truncate(aligned_mlp, k)
    with torch.inference_mode():
        ref = torch.cat([cut.model(**model_inputs(b)) for b in digits_batches])
    assert (out.layer == k).all()
    assert torch.equal(out.prediction, ref.argmax(-1))


@pytest.mark.parametrize("policy", ["confidence", "entropy", "patience"])
def test_compaction_keeps_order(aligned_mlp, digits_batches, policy):
    tau = {"confidence": spread_threshold(aligned_mlp, digits_batches), "entropy": 0.05, "patience": 3}[policy]
    pol = make_policy(policy, tau)
    batched = EarlyExitRunner(aligned_mlp.stack, pol).run(digits_batches)
    single = EarlyExitRunner(aligned_mlp.stack, pol).run(one_by_one(digits_batches))
    reference = EarlyExitRunner(aligned_mlp.stack, pol, compact=False).run(digits_batches)
    assert len(set(batched.layer.tolist())) > 1, "the test needs samples exiting at different layers"
    for other in (single, reference):
        assert torch.equal(batched.layer, other.layer)
        assert torch.equal(batched.prediction, other.prediction)
        assert torch.allclose(batched.confidence, other.confidence, atol=1e-5)
    sim = simulate(pol, layer_logits(aligned_mlp.stack, digits_batches))
    assert torch.equal(sim.layer, batched.layer) and torch.equal(sim.prediction, batched.prediction)


@pytest.mark.parametrize("name,data", [("bert-tiny", "sentences"), ("vit-digits", "digits")])
def test_compaction_with_masks_and_hf_models(name, data):
    """bert-tiny batches are padded: compaction must slice the (B, 1, 1|T, T) attention mask with the batch."""
    bundle = load_model(name, num_classes=10 if data == "digits" else 2)
    bundle.model.eval()
    batches = data_batches(data, bundle.inputs, limit=24, batch_size=12)
    if name == "bert-tiny":
        assert (batches[0]["attention_mask"] == 0).any()
    pol = ConfidencePolicy(spread_threshold(bundle, batches))
    batched = EarlyExitRunner(bundle.stack, pol).run(batches)
    single = EarlyExitRunner(bundle.stack, pol).run(one_by_one(batches))
    assert len(set(batched.layer.tolist())) > 1
    assert torch.equal(batched.layer, single.layer) and torch.equal(batched.prediction, single.prediction)
    assert torch.allclose(batched.confidence, single.confidence, atol=1e-5)
    full = EarlyExitRunner(bundle.stack, ConfidencePolicy(1.0)).run(batches)
    with torch.inference_mode():
        logits = torch.cat([logits_of(bundle.model(**model_inputs(b))) for b in batches])
    assert torch.equal(full.prediction, logits.argmax(-1))


def test_multi_exit_heads_are_used(digits_batches):
    bundle = load_model("mlp-residual", num_classes=10)
    bundle.model.eval()
    bundle.exit_heads = make_exit_heads(bundle.stack).eval()
    with torch.no_grad():  # head 3 (layer 3) now always predicts class 7 with certainty
        head = bundle.exit_heads[2].head
        head.weight.zero_()
        head.bias.copy_(torch.arange(10) == 7).mul_(50.0)
    out = EarlyExitRunner(bundle.stack, ConfidencePolicy(0.99), bundle.exit_heads).run(digits_batches)
    shared = EarlyExitRunner(bundle.stack, ConfidencePolicy(0.99)).run(digits_batches)
    assert (out.layer <= 3).all() and (out.prediction[out.layer == 3] == 7).all() and (out.layer == 3).any()
    assert not (shared.layer == 3).all()
    with pytest.raises(LayerwiseError, match="3 exit heads for 8 layers"):
        EarlyExitRunner(bundle.stack, ConfidencePolicy(0.9), bundle.exit_heads[:3])


def test_empty_data_is_an_error(aligned_mlp):
    runner = EarlyExitRunner(aligned_mlp.stack, ConfidencePolicy(0.9))
    for empty in (lambda: runner.run([]), lambda: materialize([], "cpu"), lambda: ExitResult.cat([])):
        with pytest.raises(LayerwiseError, match="the data set is empty"):
            empty()


# ---------------------------------------------------------------- shift and transfer


def test_transfer_matches_a_separate_sklearn_fit_on_float64_features(aligned_mlp):
    """The reference computes the readout inputs norm(hˡ), ℓ = 0..L, from the weights in float64 (not through the
    layer stack), fits one sklearn logistic regression on the last layer's and scores it at every layer."""
    from sklearn.linear_model import LogisticRegression

    from layerwise.evaluation import transfer_accuracy

    model = aligned_mlp.model

    def readout_inputs64(split):
        batches = data_batches("digits", aligned_mlp.inputs, split, limit=400)
        x, y = torch.cat([b["inputs"] for b in batches]), torch.cat([b["labels"] for b in batches]) % 2
        with torch.no_grad():
            hs = ref.own_mlp_hidden64(model, x)
            return [ref.layer_norm64(h, model.norm.weight, model.norm.bias, model.norm.eps).numpy() for h in hs], y

    (z_train, y_train), (z_test, y_test) = readout_inputs64("train"), readout_inputs64("test")
    head = LogisticRegression(C=1.0, max_iter=1000).fit(z_train[-1], y_train.numpy())
    want = [float((head.predict(z) == y_test.numpy()).mean()) for z in z_test]
    parity = transfer_accuracy(aligned_mlp, "digits", "digits", relabel=lambda y: y % 2, limit=400)
    assert len(want) == aligned_mlp.stack.num_layers + 1 and want[-1] > 0.7  # trained: well above chance
    # The library fits on float32 features: a borderline test sample may flip, hence one sample's worth.
    assert parity["per_layer_accuracy"] == pytest.approx(want, abs=1 / len(y_test) + 1e-12)


def test_exit_command_reports_shift_and_transfer(aligned_mlp, tmp_path):
    """``exit --shift-data D`` on the evaluation data itself reproduces the in-distribution per-layer accuracy
    (two code paths: the exit report's logits and ``layerwise_accuracy``); the transfer head is fitted on the
    last layer and scored at every layer, and the figure is written."""
    from layerwise.checkpoints import save_model
    from layerwise.commands.exit import ExitOptions, run

    save_model(aligned_mlp, tmp_path / "model")
    results = run(ExitOptions(model=[str(tmp_path / "model")], data="digits", out=tmp_path / "out", limit=300,
                              val_split=None, shift_data="digits", transfer_data="digits", transfer_splits="train,test",
                              transfer_limit=300, device="cpu"))
    report = results["models"][0]
    assert report["shift"]["per_layer_accuracy"] == pytest.approx(report["per_layer_accuracy"], abs=1e-12)
    transfer = report["transfer"]["per_layer_accuracy"]
    assert len(transfer) == aligned_mlp.stack.num_layers + 1
    assert transfer[-1] > 0.7 and transfer[-1] > transfer[0]
    assert (tmp_path / "out" / "per_layer_accuracy.png").stat().st_size > 0
