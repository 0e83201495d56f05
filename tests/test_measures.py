"""Every measure against an independent float64 reference (tests/_refs.py), plus errors and peers' bugs."""

import _refs as ref
import numpy as np
import pytest
import torch
from fixtures import layer_features
from sklearn.cross_decomposition import CCA

from layerwise.errors import LayerwiseError, UndefinedLayerWarning
from layerwise.measures import MEASURES, cca, cka, cosine, knn, layer_matrix, pnka, procrustes, rsa

TOL = 1e-8


def pair(n=60, d1=8, d2=6, seed=0, noise=0.5):
    """Two related random layers (Y a noisy linear map of X), float64 numpy."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1) * 3
    y = x @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))
    return x, y


def t(a):
    return torch.from_numpy(np.asarray(a))


@pytest.mark.parametrize("fn, reference", [
    (cka.cka, ref.cka),
    (cka.cka_debiased, ref.cka_debiased),
    (cka.cka_rbf, ref.cka_rbf),
    (lambda x, y: cka.cka_rbf(x, y, factor=0.5), lambda x, y: ref.cka_rbf(x, y, 0.5)),
    (cca.mean_cca, lambda x, y: ref.cca_rhos(x, y).mean()),
    (cca.svcca, ref.svcca),
    (cca.pwcca, ref.pwcca),
    (procrustes.procrustes, ref.procrustes),
    (rsa.rsa, ref.rsa),
    (lambda x, y: rsa.rsa(x, y, "euclidean", "pearson"), lambda x, y: ref.rsa(x, y, "euclidean", "pearson")),
    (pnka.pnka, lambda x, y: ref.pnka_per_sample(x, y).mean()),
    (knn.mutual_knn, lambda x, y: ref.mutual_knn(x, y, 10)),
    (lambda x, y: knn.mutual_knn(x, y, k=3), lambda x, y: ref.mutual_knn(x, y, 3)),
    (knn.cknna, lambda x, y: ref.cknna(x, y, 10)),
])
def test_measure_matches_reference(fn, reference):
    for seed in range(3):
        x, y = pair(seed=seed)
        assert fn(t(x), t(y)) == pytest.approx(reference(x, y), abs=TOL)


def test_cosine_matches_numpy():
    x, y = pair(d2=8)
    assert cosine.cosine(t(x), t(y)) == pytest.approx(ref.cosine(x, y), abs=TOL)
    feats = layer_features()
    mean, per = cosine.cosine_matrix(feats)
    for a in range(4):
        for b in range(4):
            assert mean[a, b] == pytest.approx(ref.cosine(feats[a].numpy(), feats[b].numpy()), abs=TOL)
    xc, yc = ref.centre(feats[1].numpy()), ref.centre(feats[-1].numpy())
    want = (xc * yc).sum(1) / (np.linalg.norm(xc, axis=1) * np.linalg.norm(yc, axis=1))
    np.testing.assert_allclose(per[:, 1], want, atol=TOL)
    assert per.shape == (50, 4)


def test_unbiased_hsic_matches_u_statistic_loops():
    x, y = pair(n=7, d1=3, d2=2)
    k, l = x @ x.T, y @ y.T
    assert ref.hsic_unbiased(k, l) == pytest.approx(ref.hsic_unbiased_loops(k, l), abs=1e-10)
    stats = cka.LinearStats.of([t(x), t(y)])
    want = ref.hsic_unbiased(k, l) / np.sqrt(ref.hsic_unbiased_loops(k, k) * ref.hsic_unbiased_loops(l, l))
    assert stats.cka_debiased()[0, 1] == pytest.approx(want, abs=TOL)


def pnka_per_sample(x, y):
    return pnka.pnka_pair_per_sample(pnka.pnka_prepare(t(x)), pnka.pnka_prepare(t(y))).numpy()


def test_pnka_per_sample_and_large_n():
    x, y = pair(n=40)
    np.testing.assert_allclose(pnka_per_sample(x, y), ref.pnka_per_sample(x, y), atol=TOL)
    # O(N d²), no N×N (let alone N×N×N) intermediate: N=4000 finishes quickly in little memory. A few rows are
    # checked against cos(K_X[i], K_Y[i]), with the kernel rows K[i] = Ẑ ẑ_i written out in float64.
    x, y = pair(n=4000, d1=32, d2=32)
    vals = pnka_per_sample(x, y)
    xh, yh = (z - z.mean(0) for z in (x, y))
    xh, yh = (z / np.linalg.norm(z, axis=1, keepdims=True) for z in (xh, yh))
    for i in (0, 1234, 3999):
        kx, ky = xh @ xh[i], yh @ yh[i]
        assert vals[i] == pytest.approx(kx @ ky / (np.linalg.norm(kx) * np.linalg.norm(ky)), abs=TOL)


def test_cca_top_rho_matches_sklearn():
    x, y = pair(n=200, d1=3, d2=2, noise=1.0)
    qx, qy = cca.cca_prepare(t(x))[0], cca.cca_prepare(t(y))[0]
    top = float(cca._rho(qx, qy)[0])
    xs, ys = CCA(n_components=1, max_iter=10000, tol=1e-14).fit(x, y).transform(x, y)
    assert top == pytest.approx(abs(np.corrcoef(xs[:, 0], ys[:, 0])[0, 1]), abs=1e-6)


def test_identical_layers_give_one():
    x, _ = pair()
    for name in ["cka", "cka_debiased", "cka_rbf", "cca", "svcca", "pwcca", "procrustes", "rsa", "pnka",
                 "mutual_knn", "cknna", "cos"]:
        assert MEASURES[name].fn(t(x), t(x)) == pytest.approx(1.0, abs=1e-10), name


# --- minibatch CKA vs torch-cka -------------------------------------------------------------------

class _Stack(torch.nn.Module):
    """Feeds layer ℓ's precomputed features through an Identity so torch-cka's hooks see them."""

    def __init__(self, n_layers):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(n_layers))

    def forward(self, x):
        return [layer(x[:, i]) for i, layer in enumerate(self.layers)]


def torch_cka_matrix(feats_a, feats_b, batch_size):
    """torch-cka's minibatch CKA on raw features, run in float64 (its internals use the default dtype)."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        la, lb = len(feats_a), len(feats_b)
        c = CKA(_Stack(la), _Stack(lb), "a", "b", [f"layers.{i}" for i in range(la)],
                [f"layers.{i}" for i in range(lb)])
        loader = lambda f: DataLoader(TensorDataset(torch.stack(f, 1)), batch_size=batch_size)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.compare(loader(feats_a), loader(feats_b))
        return c.export()["CKA"].numpy()
    finally:
        torch.set_default_dtype(old)


def test_minibatch_matches_torch_cka():
    fa, fb = layer_features(96, (6,) * 3, seed=1), layer_features(96, (5,) * 2, seed=2)
    ours = layer_matrix("cka_minibatch", fa, fb, batch_size=32)
    theirs = torch_cka_matrix(fa, fb, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_minibatch_averages_before_ratio_not_last_batch():
    """ckatorch's bug: the result was overwritten by the last batch. Ours = mean HSICs, then ratio."""
    x, y = pair(n=90, d2=6)
    bounds = [(0, 30), (30, 60), (60, 90)]
    h = lambda a, b: np.mean([ref.hsic_unbiased(a[s:e] @ a[s:e].T, b[s:e] @ b[s:e].T) for s, e in bounds])
    want = h(x, y) / np.sqrt(h(x, x) * h(y, y))
    got = cka.cka_minibatch(t(x), t(y), batch_size=30)
    assert got == pytest.approx(want, abs=TOL)
    last = ref.cka_debiased(x[60:], y[60:])
    assert abs(got - last) > 1e-4


def test_minibatch_small_batches():
    """torch-cka divides by zero / gives NaN for batches <= 3; we refuse, and a valid batch is finite."""
    x, y = pair(n=40)
    with pytest.raises(LayerwiseError, match="batch_size >= 4"):
        cka.cka_minibatch(t(x), t(y), batch_size=3)
    assert np.isfinite(cka.cka_minibatch(t(x), t(y), batch_size=4))
    # A remainder of 2 samples is folded into the previous batch instead of producing NaN.
    assert np.isfinite(cka.cka_minibatch(t(x), t(y), batch_size=19))


# --- layer_matrix ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MEASURES))
def test_layer_matrix_entries_are_pairwise_fn(name):
    """Also anatome's swap bug: M[a_i, b_j] uses a's features for rows; not symmetric across models."""
    fa, fb = layer_features(40, (6,) * 4, seed=3), layer_features(40, (6,) * 4, seed=4)
    opts = {"k": 5} if "knn" in name else {"batch_size": 20} if name == "cka_minibatch" else {}
    m = layer_matrix(name, fa, fb, **opts)
    fn = MEASURES[name].fn
    for i in range(4):
        for j in range(4):
            assert m[i, j] == pytest.approx(fn(fa[i], fb[j], **opts), abs=TOL)
    assert not np.allclose(m, m.T)
    within = layer_matrix(name, fa, **opts)
    for i in range(4):
        for j in range(4):
            assert within[i, j] == pytest.approx(fn(fa[i], fa[j], **opts), abs=TOL)


def test_cross_model_different_widths():
    fa, fb = layer_features(40, (6,) * 3), layer_features(40, (9,) * 2, seed=5)
    m = layer_matrix("cka", fa, fb)
    assert m.shape == (3, 2)
    assert m[2, 1] == pytest.approx(ref.cka(fa[2].numpy(), fb[1].numpy()), abs=TOL)


def test_sample_cap_subsamples_with_warning():
    fa = layer_features(120, (5,) * 2)
    with pytest.warns(UserWarning, match="subsampled from 120 to 50"):
        m = layer_matrix("rsa", fa, sample_cap=50, seed=1)
    idx = torch.randperm(120, generator=torch.Generator().manual_seed(1))[:50].sort().values
    assert m[0, 1] == pytest.approx(ref.rsa(fa[0].numpy()[idx], fa[1].numpy()[idx]), abs=TOL)


# --- errors and undefined values ------------------------------------------------------------------

def test_nan_features_raise():
    fa = layer_features()
    fa[2] = fa[2].clone()
    fa[2][3, 1] = float("nan")
    with pytest.raises(LayerwiseError, match="layer 2 features contain NaN/Inf; check the model/inputs"):
        layer_matrix("cka", fa)
    fa[2][3, 1] = float("inf")
    with pytest.raises(LayerwiseError, match="NaN/Inf"):
        layer_matrix("cos", fa)


def test_mismatched_samples_raise():
    fa = layer_features()
    with pytest.raises(LayerwiseError, match="samples"):
        layer_matrix("cka", [fa[0], fa[1][:-1]])
    with pytest.raises(LayerwiseError, match="samples"):
        layer_matrix("cka", fa, [x[:-2] for x in fa])
    with pytest.raises(LayerwiseError, match="sample counts differ"):
        cka.cka(fa[0], fa[1][:-1])


def test_too_few_samples_raise():
    fa = [x[:3] for x in layer_features()]
    with pytest.raises(LayerwiseError, match="debiased CKA needs at least 4 samples, got 3"):
        layer_matrix("cka_debiased", fa)
    with pytest.raises(LayerwiseError, match="at least 2 samples"):
        layer_matrix("cka", [x[:1] for x in fa])
    with pytest.raises(LayerwiseError, match="SVCCA or more samples"):
        cca.mean_cca(*[x[:5] for x in layer_features()[:2]])
    with pytest.raises(LayerwiseError, match="k < N"):
        knn.mutual_knn(fa[0], fa[1])


def test_cos_needs_equal_widths():
    with pytest.raises(LayerwiseError, match="COS needs equal widths: layer a has 6, layer b has 9; use CKA"):
        layer_matrix("cos", layer_features(50, (6,) * 2), layer_features(50, (9,) * 2))
    with pytest.raises(LayerwiseError, match="COS needs equal widths"):
        cosine.cosine(t(np.ones((5, 2))), t(np.ones((5, 3))))


def test_unknown_measure():
    with pytest.raises(LayerwiseError, match="unknown measure"):
        layer_matrix("nope", layer_features())


@pytest.mark.parametrize("name", ["cka", "cka_debiased", "cos", "rsa", "pnka", "cca", "cka_minibatch"])
def test_constant_layer_is_nan_with_warning(name):
    fa = layer_features(40, (6,) * 4)
    fa[0] = torch.ones(40, 6) * 3.0
    opts = {"batch_size": 20} if name == "cka_minibatch" else {}
    with pytest.warns(UndefinedLayerWarning, match=r"layer 0: features are constant across samples .*"
                                                   r"similarity undefined, reported as null"):
        m = layer_matrix(name, fa, **opts)
    assert np.isnan(m[0]).all() and np.isnan(m[:, 0]).all()
    assert np.isfinite(m[1:, 1:]).all()


def test_constant_layer_in_streaming_stats_warns():
    fa = layer_features(40, (6,) * 4)
    fa[1] = torch.zeros(40, 6)
    with pytest.warns(UndefinedLayerWarning, match=r"layer\(s\) \[1\]"):
        m = cka.LinearStats.of(fa).cka()
    assert np.isnan(m[1]).all() and np.isfinite(m[0, 2])


def test_zero_norm_sample_is_nan_with_warning():
    fa = layer_features(30, (6,) * 2)
    fa[0] = torch.round(fa[0] * 8) / 8  # dyadic values: sums are exact, so the mean is exactly zero below
    fa[0][4] = 0.0
    fa[0][5] -= fa[0].sum(0)  # global mean is now zero, so centred row 4 is zero
    with pytest.warns(UndefinedLayerWarning, match="zero norm after centring"):
        mean, per = cosine.cosine_matrix(fa)
    assert np.isnan(per[4, 0]) and np.isfinite(np.delete(per[:, 0], 4)).all()
    keep = np.arange(30) != 4
    want = np.mean(
        [(a @ b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in
         zip(ref.centre(fa[0].numpy())[keep], ref.centre(fa[1].numpy())[keep])])
    assert mean[0, 1] == pytest.approx(want, abs=TOL)
