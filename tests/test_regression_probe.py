"""The regression probe of ``analyze`` (issue 24, item 5): per layer a ridge regression on standardised features
with α cross-validated, scored by Pearson and Spearman. References written here: standardisation, the closed-form
ridge with an unpenalised intercept, α chosen by the exact leave-one-out error (hat-matrix identity) in float64
numpy, and the correlations from ``scipy.stats``; on synthetic data with a known linear signal, and through a
model's layers (the signal is linear in the input, so exactly linear in the MLP's layer 0)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from layerwise.checkpoints import load_model
from layerwise.data import LayerwiseDataset, load_dataset, make_loader
from layerwise.data.batches import model_inputs
from layerwise.evaluation import analyze
from layerwise.evaluation.probing import PROBE_ALPHAS, probe_layers, ridge_probe_scores


def _reference(train_x, train_y, test_x, test_y) -> tuple[float, float, float]:
    """(Pearson, Spearman, α): standardise with the training mean and (population) std, centre y, ridge
    w = (XᵀX + αI)⁻¹ Xᵀy; α minimising the mean squared leave-one-out residual eᵢ / (1 − Hᵢᵢ), H = X(XᵀX + αI)⁻¹Xᵀ
    + 11ᵀ/n (the intercept is not penalised); first α on ties."""
    x, y = np.asarray(train_x, np.float64), np.asarray(train_y, np.float64)
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    z, ybar = (x - mu) / sd, y.mean()
    n, d = z.shape
    best = None
    for alpha in PROBE_ALPHAS:
        inv = np.linalg.inv(z.T @ z + alpha * np.eye(d))
        h = z @ inv @ z.T + 1.0 / n
        resid = y - ybar - z @ (inv @ z.T @ (y - ybar))
        loo = np.mean((resid / (1.0 - np.diag(h))) ** 2)
        if best is None or loo < best[0]:
            best = (loo, alpha, inv @ z.T @ (y - ybar))
    _, alpha, w = best
    pred = ((np.asarray(test_x, np.float64) - mu) / sd) @ w + ybar
    return pearsonr(pred, test_y)[0], spearmanr(pred, test_y)[0], alpha


def _synthetic(n: int, d: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)  # unequal scales: standardisation matters
    return x, x @ w / np.abs(w).sum() + noise * rng.normal(size=n)


@pytest.mark.parametrize("noise,n_train,d", [(0.05, 120, 10), (1.0, 80, 30), (10.0, 60, 40)])
def test_ridge_probe_against_the_closed_form(noise, n_train, d):
    x, y = _synthetic(n_train + 200, d, noise, seed=int(noise * 10) + d)
    r, rho, alpha = ridge_probe_scores(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    er, erho, ealpha = _reference(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    assert alpha == ealpha
    assert r == pytest.approx(er, abs=1e-9) and rho == pytest.approx(erho, abs=1e-9)
    if noise < 0.1:  # a strong linear signal is found; a drowned one is not
        assert r > 0.99 and rho > 0.98
    if noise >= 10.0:
        assert abs(r) < 0.35


def test_a_target_without_signal_is_not_correlated_and_constant_predictions_are_nan():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    r, _, _ = ridge_probe_scores(x[:150], rng.normal(size=150), x[150:], rng.normal(size=150))
    assert abs(r) < 0.25
    r, rho, _ = ridge_probe_scores(np.ones((20, 3)), rng.normal(size=20), rng.normal(size=(10, 3)),
                                   rng.normal(size=10))
    assert np.isnan(r) and np.isnan(rho)  # constant features: the probe predicts the mean everywhere


def _digits_regression(split: str, n: int, w: torch.Tensor) -> LayerwiseDataset:
    """Digits images with a real target linear in the pixels plus noise: a regression data set."""
    base = load_dataset("digits", split, limit=n, seed=0)
    images = base.images.float()
    target = images.flatten(1).double() @ w + 0.05 * torch.randn(len(images), generator=torch.Generator()
                                                                .manual_seed(len(images)), dtype=torch.float64)
    return LayerwiseDataset("digits-score", "image", images=images, labels=target.float(), regression=True)


def test_probe_layers_of_a_model_on_a_regression_task():
    torch.manual_seed(0)
    bundle = load_model("mlp-residual", num_classes=10)
    bundle.stack.eval()
    w = torch.randn(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / 8
    train, test = _digits_regression("train", 150, w), _digits_regression("test", 80, w)
    out = probe_layers(bundle, train, test, batch_size=32)
    assert set(out) == {"probe_pearson", "probe_spearman", "probe_alpha"}  # no NC1: there are no classes
    assert len(out["probe_pearson"]) == bundle.stack.num_layers + 1

    def features(ds):  # per layer (N, D): the stack's own states and pooled features, one batch
        batch = next(iter(make_loader(ds, bundle.inputs, len(ds))))
        with torch.no_grad():
            return [bundle.stack.features(s).double().numpy() for s in bundle.stack.states(model_inputs(batch))]

    for ell, (a, b) in enumerate(zip(features(train), features(test))):
        er, erho, ealpha = _reference(a, train.labels.numpy(), b, test.labels.numpy())
        assert out["probe_alpha"][ell] == ealpha, ell
        assert out["probe_pearson"][ell] == pytest.approx(er, abs=1e-5), ell  # float32 features
        assert out["probe_spearman"][ell] == pytest.approx(erho, abs=1e-3), ell  # ranks of near-ties may swap
    assert out["probe_pearson"][0] > 0.9  # the pixels are a linear map of layer 0 in this MLP


def _pairs(n: int, seed: int) -> LayerwiseDataset:
    """Sentence pairs with real scores in [0, 5], shaped like STS-B."""
    g = torch.Generator().manual_seed(seed)
    texts = [" ".join(chr(97 + int(i)) * 3 for i in torch.randint(0, 26, (5,), generator=g)) for _ in range(n)]
    return LayerwiseDataset("pairs", "text", texts=texts, pairs=texts[::-1], labels=torch.rand(n, generator=g) * 5,
                            regression=True)


def test_analyze_reports_the_regression_probe_instead_of_skipping_it():
    bundle = load_model("bert-tiny", num_classes=1)  # a regression head, as for STS-B
    bundle.stack.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = analyze(bundle, _pairs(24, 1), ["cos"], batch_size=12, probe_train=_pairs(40, 0))
    assert not [w for w in caught if "skipped" in str(w.message)]
    assert res["metric"] == "pearson"
    assert len(res["probe_pearson"]) == len(res["probe_spearman"]) == len(res["layers"])
    assert "probe_accuracy" not in res and "nc1" not in res
