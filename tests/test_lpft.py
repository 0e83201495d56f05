"""LP-FT diagnostics (issue 14) against independent references: the eNTK's backbone part against a double loop of
``torch.autograd.grad`` and its head part against the head's own gradients (float64), the leave-one-out kernel
accuracy against refitting without each sample, ECE/MCE against hand-computed bins, Brier and NLL against
scikit-learn, the temperature against a grid search, the feature change against the formula on hidden states,
and ``lpft`` end to end on a tiny model (head-norm log, resume, results)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.checkpoints import load_model
from layerwise.data import load_dataset, make_loader
from layerwise.data.batches import model_inputs
from layerwise.errors import LayerwiseError
from layerwise.evaluation.calibration import brier, calibration, ece_mce, fit_temperature, reliability
from layerwise.evaluation.lpft import check_classifier, check_ntk_memory, feature_change, relative_change
from layerwise.evaluation.lpft.ntk import backbone_parameters, ft_kernel, kernel_loo_accuracy, ntk_bytes, pt_kernel
from layerwise.commands.lpft import LpftOptions
from layerwise.commands.lpft import run as run_lpft
from layerwise.training.probe import head_inputs, readout_linear


@pytest.fixture(scope="module")
def tiny_bert():
    """bert-tiny in float64, eval mode, and five single-sentence batches of different lengths."""
    bundle = load_model("bert-tiny", num_classes=2)
    stack = bundle.stack.double().eval()
    ds = load_dataset("sentences", "train", limit=5, seed=1)
    return bundle, stack, list(make_loader(ds, bundle.inputs, 1))


def _grad_rows(stack, params, batch) -> torch.Tensor:
    """(C, P): ∂f_a(x)/∂params by one torch.autograd.grad call per logit."""
    logits = stack(model_inputs(batch))[0]
    return torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(logits[a], params, retain_graph=True)])
                        for a in range(logits.shape[0])])


def test_ft_kernel_matches_autograd_double_loop(tiny_bert):
    _, stack, batches = tiny_bert
    head = readout_linear(stack)
    before = dict(stack.named_parameters())
    kernel = ft_kernel(stack, head, batches, chunk=2)  # 5 samples: chunks of 2, 2, 1
    backbone = [p for p in stack.parameters() if all(p is not q for q in head.parameters())]
    assert len(backbone) == len(backbone_parameters(stack, head))
    rows = [_grad_rows(stack, backbone, b) for b in batches]
    n, c = len(batches), head.out_features
    expected = torch.zeros(n, c, n, c, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            expected[i, :, j, :] = rows[i] @ rows[j].T
    assert kernel.dtype == torch.float64 and kernel.shape == (n, c, n, c)
    torch.testing.assert_close(kernel, expected, rtol=1e-10, atol=1e-12)
    after = dict(stack.named_parameters())  # functional_call must put every (aliased) parameter back
    assert all(after[k] is v and type(v) is torch.nn.Parameter for k, v in before.items())


def test_pt_kernel_is_the_heads_gradient_gram(tiny_bert):
    _, stack, batches = tiny_bert
    head = readout_linear(stack)
    phi, _ = head_inputs(stack, batches, torch.device("cpu"))
    rows = [_grad_rows(stack, [head.weight, head.bias], b) for b in batches]
    expected = torch.stack([torch.stack([ri @ rj.T for rj in rows]) for ri in rows])  # (N, N, C, C)
    # head_inputs hands φ over in float32, hence the tolerance
    torch.testing.assert_close(pt_kernel(phi, 2), expected.permute(0, 2, 1, 3), rtol=1e-6, atol=1e-9)


def _refit_loo(kernel: torch.Tensor, labels: torch.Tensor, ridge: float) -> float:
    """Kernel ridge refitted without each sample in turn (λ from the full kernel, as the closed form uses)."""
    n, c = kernel.shape[:2]
    k = kernel.reshape(n * c, n * c)
    lam = ridge * torch.diagonal(k).mean()
    y = F.one_hot(labels, c).double() - 1 / c
    hits = 0
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        idx = torch.tensor([j * c + a for j in keep for a in range(c)])
        alpha = torch.linalg.solve(k[idx][:, idx] + lam * torch.eye(len(idx), dtype=torch.float64), y[keep].reshape(-1))
        pred = k[i * c:(i + 1) * c][:, idx] @ alpha
        hits += int(pred.argmax() == labels[i])
    return hits / n


@pytest.mark.parametrize("matrix_valued", [False, True])
def test_kernel_loo_accuracy_matches_refitting(matrix_valued):
    g = torch.Generator().manual_seed(0)
    n, c = 14, 3
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    if matrix_valued:
        a = torch.randn(n * c, 6, generator=g, dtype=torch.float64)
        kernel = (a @ a.T).reshape(n, c, n, c)
    else:
        kernel = pt_kernel(x, c)
    for ridge in (1e-3, 0.3):
        assert kernel_loo_accuracy(kernel, labels, ridge) == pytest.approx(_refit_loo(kernel, labels, ridge), abs=1e-12)


def test_ece_and_mce_by_hand():
    # confidences 0.55, 0.58, 0.95, 0.9; correctness 1, 0, 1, 1 (no confidence on a bin edge m/15)
    probs = torch.tensor([[0.55, 0.45], [0.42, 0.58], [0.95, 0.05], [0.1, 0.9]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    ece, mce = ece_mce(probs, labels)
    # bin 8 ((0.5333, 0.6]): 0.55 and 0.58, accuracy 1/2, confidence 0.565 → gap 0.065
    # bin 13 ((0.8667, 0.9333]): 0.9, correct → gap 0.1; bin 14 ((0.9333, 1]): 0.95, correct → gap 0.05
    assert ece == pytest.approx((2 * 0.065 + 0.1 + 0.05) / 4)
    assert mce == pytest.approx(0.1)
    rel = reliability(probs, labels)
    assert rel["count"][8] == 2 and rel["count"][13] == 1 and rel["count"][14] == 1 and sum(rel["count"]) == 4
    assert rel["accuracy"][8] == 0.5 and rel["confidence"][8] == pytest.approx(0.565)


def test_brier_and_nll_match_scikit_learn():
    from sklearn.metrics import brier_score_loss, log_loss

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 2, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 2, (50,), generator=g)
    probs = logits.softmax(1)
    # the two-class Brier sum over both classes is twice scikit-learn's binary score
    assert brier(probs, labels) == pytest.approx(2 * brier_score_loss(labels.numpy(), probs[:, 1].numpy()))
    assert calibration(logits, labels)["nll"] == pytest.approx(log_loss(labels.numpy(), probs.numpy()))


def test_temperature_minimises_nll_over_a_grid():
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (200,), generator=g)
    logits = 6 * F.one_hot(labels, 3).double() + 4 * torch.randn(200, 3, generator=g, dtype=torch.float64)
    t = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    nll = [float(F.cross_entropy(logits / s, labels)) for s in grid]
    assert t == pytest.approx(float(grid[int(np.argmin(nll))]), rel=5e-3)
    assert t > 1  # over-confident logits are softened


def test_regression_head_has_no_calibration_or_classifier():
    with pytest.raises(LayerwiseError, match="regression head"):
        calibration(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(LayerwiseError, match="regression head"):
        check_classifier(load_model("bert-tiny", num_classes=1).stack, "bert-tiny")
    with pytest.raises(LayerwiseError, match="no classifier head"):
        check_classifier(load_model("gpt2-tiny").stack, "gpt2-tiny")


def test_ntk_memory_bound_names_the_remedy():
    stack = load_model("bert-tiny", num_classes=2).stack
    p = sum(t.numel() for t in backbone_parameters(stack, readout_linear(stack)).values())
    need = ntk_bytes(8, 2, 2, p)
    assert need == (2 * 2 + 2) * 2 * p * 4 + 2 * 2 * 2 * min(p, 2**20) * 8 + 2 * 16**2 * 8
    assert check_ntk_memory(stack, 8, 2, need / 2**30)["estimated_bytes"] == need
    with pytest.raises(LayerwiseError, match="lower the NTK chunk size .* or subset"):
        check_ntk_memory(stack, 8, 2, 0.99 * need / 2**30)


def test_feature_change_against_the_formula():
    pre = load_model("mlp-residual", num_classes=10).stack.eval()
    tuned = copy.deepcopy(pre)
    with torch.no_grad():
        tuned.blocks[3].fc.weight.mul_(1.5)  # layers 0..3 unchanged, 4..L moved
    ds, inputs = load_dataset("digits", "test", limit=40), load_model("mlp-residual").inputs
    out = feature_change(pre, tuned, make_loader(ds, inputs, 16))  # three batches
    batch = next(iter(make_loader(ds, inputs, 40)))  # the reference: all 40 at once
    with torch.no_grad():
        h_pre = [pre.features(s) for s in pre.states(batch)]
        h_ft = [tuned.features(s) for s in tuned.states(batch)]
    expected = [float(((b - a).norm(dim=1) / a.norm(dim=1)).double().mean()) for a, b in zip(h_pre, h_ft, strict=True)]
    assert out["relative"][:4] == [0.0] * 4 and min(out["relative"][4:]) > 0
    np.testing.assert_allclose(out["relative"], expected, rtol=1e-5, atol=1e-7)
    assert all(c == pytest.approx(1.0) for c in out["cos"][:4]) and out["cos"][-1] < 1
    assert relative_change(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 5.0]])).item() == pytest.approx(
        math.sqrt(10) / 5)


def test_lpft_end_to_end_logs_head_norm_and_resumes(tmp_path):
    opts = LpftOptions(model="mlp-residual", data="digits", out=str(tmp_path / "run"), limit=160, eval_limit=60,
                       ntk_subset=8, ft_lrs=[1e-3, 3e-3], lpft_lrs=[1e-4], batch_size=32, progress=False,
                       device="cpu")
    results = run_lpft(opts)
    ft, lp, lpft = (results["recipes"][k] for k in ("ft", "lp", "lpft"))
    assert set(ft["grid"]) == {"0.001", "0.003"} and ft["val_accuracy"] == max(ft["grid"].values())
    # 128 training examples, batch 32: four steps, logged from the head before the first step
    assert [r["step"] for r in ft["head_norm_trajectory"]] == [0, 1, 2, 3, 4]
    assert ft["head_norm_trajectory"][0]["frobenius"] == pytest.approx(ft["head_norm"]["start"])
    assert lpft["head_norm"]["start"] == pytest.approx(lp["head_norm"]["final"])  # LP-FT starts from LP's head
    stack = load_model(lpft["run"]).stack
    w = readout_linear(stack).weight.detach().double()
    assert lpft["head_norm"]["final"] == pytest.approx(float(torch.linalg.matrix_norm(w)))
    assert lp["feature_change"]["relative"] == [0.0] * len(lp["feature_change"]["relative"])  # LP trains no backbone
    assert ft["ntk"]["share_pt"] + ft["ntk"]["share_ft"] == pytest.approx(1.0)
    assert lpft["ntk"]["trace_pt"] == pytest.approx(ft["ntk"]["trace_pt"])  # K_pt depends on φ only: same backbone
    assert set(results["claims"]) == {"head_norm_lpft_larger", "feature_change_lpft_smaller",
                                      "ece_lpft_worse_then_fixed"}
    log = tmp_path / "run" / "ft" / "head_norm-lr-0.001.jsonl"
    first = log.read_text()
    again = run_lpft(opts)  # every run folder is finished: nothing retrains, the log is kept as it was
    assert log.read_text() == first
    assert json.dumps(again["recipes"]["ft"]["grid"]) == json.dumps(ft["grid"])


def test_lpft_refuses_bad_sizes_before_training(tmp_path):
    with pytest.raises(LayerwiseError, match="larger than the .* training examples"):
        run_lpft(LpftOptions(model="mlp-residual", data="digits", out=str(tmp_path / "a"), limit=10**6))
    with pytest.raises(LayerwiseError, match="NTK subset of 500 is larger"):
        run_lpft(LpftOptions(model="mlp-residual", data="digits", out=str(tmp_path / "b"), limit=100, ntk_subset=500))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_lpft_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(LayerwiseError, match="notes.txt"):
        run_lpft(LpftOptions(model="mlp-residual", data="digits", out=str(tmp_path / "out")))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
