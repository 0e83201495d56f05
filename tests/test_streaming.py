"""Streaming statistics: batch splits give the in-memory full-data values."""

import _refs as ref
import numpy as np
import torch
from fixtures import layer_features
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise.measures.cka import LinearStats, cross_block
from layerwise.measures.cosine import CosineAccumulator, cosine_matrix


def feats(widths=(5, 7, 5, 3), seed=0):
    """float32 features (as models produce) far from zero mean, so streaming centring is exercised."""
    return layer_features(48, widths, seed=seed, noise=0.5, offset=2.0, dtype=torch.float32)


def split(f, cuts):
    bounds = [0, *cuts, len(f[0])]
    return [[x[a:b] for x in f] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 47), max_size=6).map(lambda c: sorted(set(c))))
def test_batches_equal_full_data(cuts):
    f = feats()
    stats = LinearStats()
    for batch in split(f, cuts):
        stats.update(batch)
    full = [x.double().numpy() for x in f]
    want = np.array([[ref.cka(a, b) for b in full] for a in full])
    want_d = np.array([[ref.cka_debiased(a, b) for b in full] for a in full])
    np.testing.assert_allclose(stats.cka(), want, atol=1e-10)
    np.testing.assert_allclose(stats.cka_debiased(), want_d, atol=1e-10)


def test_cross_block_rows_are_model_a():
    fa, fb = feats(widths=(4, 6)), feats(widths=(3, 5, 2), seed=1)
    m = cross_block(LinearStats.of(fa + fb).cka(), 2)
    assert m.shape == (2, 3)
    assert np.isclose(m[1, 0], ref.cka(fa[1].double().numpy(), fb[0].double().numpy()), atol=1e-10)


def test_cosine_accumulator_streams():
    f = feats(widths=(6, 6, 6))
    stats = LinearStats()
    for batch in split(f, [10, 33]):
        stats.update(batch)
    acc = CosineAccumulator(stats.means())
    for batch in split(f, [7, 20, 41]):
        acc.update(batch)
    mean, per = acc.result()
    want_mean, want_per = cosine_matrix(f)
    np.testing.assert_allclose(mean, want_mean, atol=1e-12)
    np.testing.assert_allclose(per, want_per, atol=1e-12)
