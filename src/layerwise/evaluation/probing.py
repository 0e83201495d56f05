"""The per-layer diagnostics of the paper's Figure 3(b): linear-probe accuracy and NC1.

- Probe: for each layer ℓ, a logistic regression on standardised features of a training split (scikit-learn
  ``StandardScaler`` + ``LogisticRegressionCV``, L2, C from ``PROBE_CS`` by stratified k-fold
  cross-validation), scored by accuracy on the evaluation split.
- Regression probe (a regression task such as STS-B): for each layer, ridge regression on standardised
  features (``StandardScaler`` + ``RidgeCV``, min_w ‖y − Xw − b‖² + α‖w‖², α from ``PROBE_ALPHAS`` by efficient
  leave-one-out cross-validation), scored on the evaluation split by Pearson's r and Spearman's ρ between
  its predictions and the targets (``scipy.stats.pearsonr`` / ``spearmanr``).
- NC1 (within-class variability collapse; Papyan, Han & Donoho, PNAS 2020) of the training features:
  NC1 = tr(Σ_W Σ_B⁺) / C, with Σ_W = (1/N) Σᵢ (hᵢ − μ_{yᵢ})(hᵢ − μ_{yᵢ})ᵀ, Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ,
  μ_c the class means, μ_G the mean of the class means and ⁺ the Moore–Penrose pseudo-inverse.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset
from layerwise.errors import LayerwiseError
from layerwise.evaluation.capture import capture, model_loader

PROBE_CS = np.logspace(-3, 1, 5)  # the grid of inverse regularisation strengths C cross-validated per layer
PROBE_ALPHAS = np.logspace(-3, 4, 15)  # the ridge strengths α cross-validated per layer (regression probe)


def nc1(features: np.ndarray, labels: np.ndarray) -> float:
    """tr(Σ_W Σ_B⁺) / C of (N, D) features with (N,) integer labels (module docstring), in float64."""
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise LayerwiseError(f"NC1 needs at least two classes, got {len(classes)}: use labelled data with several")
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    within = x - means[np.searchsorted(classes, y)]
    sigma_w = within.T @ within / len(x)
    between = means - means.mean(axis=0)
    sigma_b = between.T @ between / len(classes)
    # Σ_B has rank ≤ C − 1: its pseudo-inverse from the top C − 1 eigenpairs (as Papyan et al. take it), so
    # rounding noise in the null space (eigenvalues ~1e-16 of the largest) is never inverted into ±1e13.
    values, vectors = np.linalg.eigh(sigma_b)
    keep = values[::-1][: len(classes) - 1]
    keep = keep[keep > values[-1] * 1e-12]
    top = vectors[:, ::-1][:, : len(keep)]
    pinv = top @ np.diag(1.0 / keep) @ top.T
    return float(np.trace(sigma_w @ pinv) / len(classes))


def make_probe(cv: int = 3, seed: int = 0):
    """The probe: standardise, then L2 logistic regression with C chosen by cross-validation."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=PROBE_CS, cv=cv, max_iter=1000, random_state=seed))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   cv: int = 3, seed: int = 0) -> tuple[float, float]:
    """(accuracy on the test features, the chosen C) of a probe fitted on the training features."""
    from sklearn.exceptions import ConvergenceWarning

    probe = make_probe(cv, seed)
    with warnings.catch_warnings():  # scikit-learn's notices of changing defaults, and slow convergence at C large
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y))
    return float(probe.score(np.asarray(test_x, dtype=np.float64), np.asarray(test_y))), float(probe[-1].C_[0])


def ridge_probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                       ) -> tuple[float, float, float]:
    """(Pearson r, Spearman ρ, the chosen α) of a ridge probe fitted on the training features and targets, the
    correlations between its test predictions and the test targets (NaN where the predictions are constant)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=PROBE_ALPHAS))
    probe.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y, dtype=np.float64))
    pred, y = probe.predict(np.asarray(test_x, dtype=np.float64)), np.asarray(test_y, dtype=np.float64)
    if np.ptp(pred) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float(probe[-1].alpha_)
    return float(pearsonr(pred, y)[0]), float(spearmanr(pred, y)[0]), float(probe[-1].alpha_)


@torch.no_grad()
def layer_features(bundle: ModelBundle, ds: LayerwiseDataset, *, pooling: str | None, batch_size: int,
                   device: torch.device) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-layer (N, D) pooled features (the model's own token unless ``pooling``) and the (N,) labels. Under a
    launcher each process captures its shard and the features are gathered in data-set order
    (``layerwise.parallel``), so every process fits the same probes on the same features."""
    from layerwise.parallel import gather_list

    dtype = next(bundle.model.parameters()).dtype
    feats: list[list[np.ndarray]] = []
    loader = model_loader(bundle, ds, batch_size, shard=True)
    for batch in capture(bundle.stack, loader, device=device, progress=False):
        for i, f in enumerate(batch.features(pooling)):
            (feats.append([]) if len(feats) <= i else None)
            feats[i].append(f.to(torch.float64 if dtype == torch.float64 else torch.float32).cpu().numpy())
    parts = gather_list([[np.concatenate(f) for f in feats]])
    return [np.concatenate(layer) for layer in zip(*parts)], ds.labels.numpy()


def probe_layers(bundle: ModelBundle, train: LayerwiseDataset, test: LayerwiseDataset, *, pooling: str | None = None,
                 batch_size: int = 64, device: torch.device | None = None, cv: int = 3,
                 seed: int = 0) -> dict[str, list[float]]:
    """``probe_accuracy`` and ``probe_C`` per layer 0..L (fitted on ``train``, scored on ``test``), and ``nc1``
    per layer of the ``train`` features; for a regression task ``regression_probe_layers`` instead."""
    if train.labels is None or test.labels is None:
        raise LayerwiseError(f"{train.name} is unlabelled: the probe needs labels or targets")
    if train.regression != test.regression:
        raise LayerwiseError(f"{train.name}: the probe's training part and the analysed split disagree on whether "
                             "the task is a regression")
    if train.regression:
        return regression_probe_layers(bundle, train, test, pooling=pooling, batch_size=batch_size, device=device)
    counts = np.bincount(train.labels.numpy())
    folds = min(cv, int(counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        raise LayerwiseError(f"{train.name}'s training part has too few examples of a class for {cv}-fold "
                             "cross-validation of the probe: use more training examples")
    device = device or next(bundle.model.parameters()).device
    xs, ys = layer_features(bundle, train, pooling=pooling, batch_size=batch_size, device=device)
    xt, yt = layer_features(bundle, test, pooling=pooling, batch_size=batch_size, device=device)
    out: dict[str, list[float]] = {"probe_accuracy": [], "probe_C": [], "nc1": []}
    for a, b in zip(xs, xt):
        acc, c = probe_accuracy(a, ys, b, yt, cv=folds, seed=seed)
        out["probe_accuracy"].append(acc)
        out["probe_C"].append(c)
        out["nc1"].append(nc1(a, ys))
    return out


def regression_probe_layers(bundle: ModelBundle, train: LayerwiseDataset, test: LayerwiseDataset, *,
                            pooling: str | None = None, batch_size: int = 64,
                            device: torch.device | None = None) -> dict[str, list[float]]:
    """``probe_pearson``, ``probe_spearman`` and ``probe_alpha`` per layer 0..L of ``ridge_probe_scores``
    (fitted on ``train``'s features and targets, scored on ``test``); NC1 needs classes and is not reported."""
    if len(train) < 3:
        raise LayerwiseError(f"{train.name}'s training part has {len(train)} examples: the ridge probe's "
                             "cross-validation needs at least 3, use more training examples")
    device = device or next(bundle.model.parameters()).device
    xs, ys = layer_features(bundle, train, pooling=pooling, batch_size=batch_size, device=device)
    xt, yt = layer_features(bundle, test, pooling=pooling, batch_size=batch_size, device=device)
    out: dict[str, list[float]] = {"probe_pearson": [], "probe_spearman": [], "probe_alpha": []}
    for a, b in zip(xs, xt):
        r, rho, alpha = ridge_probe_scores(a, ys, b, yt)
        out["probe_pearson"].append(r)
        out["probe_spearman"].append(rho)
        out["probe_alpha"].append(alpha)
    return out
