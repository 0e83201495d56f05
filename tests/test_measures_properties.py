"""Hypothesis property tests: the invariances each measure claims (and one it must not have)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise.measures import cka, cosine, procrustes

seeds = st.integers(0, 2**31 - 1)
scales = st.floats(1e-3, 1e3)


def data(seed, n=40, d=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, d, generator=g, dtype=torch.float64) + torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return x, y, q


@settings(max_examples=25, deadline=None)
@given(seeds, scales)
def test_cka_orthogonal_and_scale_invariant(seed, s):
    x, y, q = data(seed)
    for fn in (cka.cka, cka.cka_debiased):
        base = fn(x, y)
        assert np.isclose(fn(x @ q, y), base, atol=1e-10)
        assert np.isclose(fn(s * x, y), base, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seeds, scales)
def test_cos_scale_invariant_not_rotation_invariant(seed, s):
    x, y, q = data(seed)
    base = cosine.cosine(x, y)
    assert np.isclose(cosine.cosine(s * x, y), base, atol=1e-10)
    assert not np.isclose(cosine.cosine(x @ q, y), base, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seeds, scales)
def test_procrustes_rotation_and_scale_invariant(seed, s):
    x, y, q = data(seed)
    base = procrustes.procrustes(x, y)
    assert np.isclose(procrustes.procrustes(x @ q, y), base, atol=1e-10)
    assert np.isclose(procrustes.procrustes(s * x, y @ q), base, atol=1e-10)
    assert 0 <= base <= 1 + 1e-12


TRANSFORMS = {
    "orthogonal": lambda x, g: x @ torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=g,
                                                               dtype=torch.float64))[0],
    "isotropic_scaling": lambda x, g: 7.5 * x,
    "translation": lambda x, g: x + 3 * torch.randn(x.shape[1], generator=g, dtype=torch.float64),
    "permutation": lambda x, g: x[:, torch.randperm(x.shape[1], generator=g)],
    "invertible_linear": lambda x, g: x @ (torch.eye(x.shape[1], dtype=torch.float64)
                                           + 0.3 * torch.randn(x.shape[1], x.shape[1], generator=g,
                                                               dtype=torch.float64)),
}


def test_registry_invariances_hold():
    """Every invariance a registry entry claims holds numerically on random data."""
    from layerwise.measures import MEASURES

    x, y, _ = data(3)
    for name, m in MEASURES.items():
        opts = {"k": 5} if "knn" in name else {}
        base = m.fn(x, y, **opts)
        for inv in m.invariances:
            moved = TRANSFORMS[inv](x, torch.Generator().manual_seed(1))
            assert np.isclose(m.fn(moved, y, **opts), base, atol=1e-9), (name, inv)
