"""Registry of layer-similarity measures and `layer_matrix`, the L_a×L_b matrix over all layer pairs.

One file per family (cosine, cka, cca, procrustes, rsa, pnka, knn): pure functions, and at its end the
family's ``MEASURES``, each with its invariances as named fields (``base.Invariances``). A new measure is
a function and one ``Measure(...)`` line in its family's file (a new family: add it to ``FAMILIES``).
``streaming.py`` holds the additive statistics behind exact COS and linear CKA over any N.

Every measure is computed in float64. Measures that need N×N structure (`needs_pairwise`) run on a
random subset of at most `SAMPLE_CAP` samples (fixed seed, same rows for both models), with a warning.
"""

import warnings

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures import cca, cka, cosine, knn, pnka, procrustes, rsa
from layerwise.measures._util import warn_undefined
from layerwise.measures.base import Invariances, Measure

SAMPLE_CAP = 2000  # N×N float64 kernels per layer: 32 MB each at the cap

FAMILIES = (cosine, cka, cca, procrustes, rsa, pnka, knn)
MEASURES: dict[str, Measure] = {m.name: m for family in FAMILIES for m in family.MEASURES}


def _validate(feats, model: str, n: int | None) -> list[torch.Tensor]:
    out = []
    for ell, x in enumerate(feats):
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise LayerwiseError(f"{model}layer {ell} features must be (N, d), got shape {tuple(x.shape)}")
        n = x.shape[0] if n is None else n
        if x.shape[0] != n:
            raise LayerwiseError(f"{model}layer {ell} has {x.shape[0]} samples, expected {n}; "
                                 "every layer must see the same inputs")
        if not torch.isfinite(x).all():
            raise LayerwiseError(f"{model}layer {ell} features contain NaN/Inf; check the model/inputs")
        out.append(x)
    return out


def _constant(feats: list[torch.Tensor], model: str) -> list[int]:
    bad = [ell for ell, x in enumerate(feats) if bool((x == x[:1]).all())]
    for ell in bad:
        warn_undefined(f"{model}layer {ell}",
                       "features are constant across samples (e.g. [CLS] at the embedding layer)")
    return bad


def layer_matrix(name: str, feats_a, feats_b=None, *, sample_cap: int = SAMPLE_CAP, seed: int = 0,
                 **options) -> np.ndarray:
    """M[i, j] = measure(feats_a[i], feats_b[j]) (feats_b=None: within model a, symmetric).

    feats are lists of (N, d_ℓ) tensors, one per layer, rows the same N inputs. Undefined entries are NaN
    (with UndefinedLayerWarning). `options` go to the measure (e.g. k=, batch_size=, factor=, method=)."""
    if name not in MEASURES:
        raise LayerwiseError(f"unknown measure {name!r}; choose one of {', '.join(MEASURES)}")
    m = MEASURES[name]
    if not feats_a or (feats_b is not None and not feats_b):
        raise LayerwiseError("no layers given; pass a non-empty list of (N, d) feature tensors")
    fa = _validate(feats_a, "model a " if feats_b is not None else "", None)
    fb = None if feats_b is None else _validate(feats_b, "model b ", fa[0].shape[0])
    n = fa[0].shape[0]
    if n < 2:
        raise LayerwiseError(f"need at least 2 samples, got {n}")
    if m.equal_width and len({x.shape[1] for x in fa + (fb or [])}) > 1:
        w = [x.shape[1] for x in fa + (fb or [])]
        raise LayerwiseError(f"{name.upper()} needs equal widths: layer a has {w[0]}, layer b has "
                             f"{next(d for d in w if d != w[0])}; use CKA for different widths")
    if m.needs_pairwise and n > sample_cap:
        # Same random rows for every layer and both models (samples are paired).
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample_cap].sort().values
        warnings.warn(f"{name} needs N×N structure: subsampled from {n} to {sample_cap} samples (seed {seed})",
                      stacklevel=2)
        fa = [x[idx.to(x.device)] for x in fa]
        fb = None if fb is None else [x[idx.to(x.device)] for x in fb]
    bad_a = _constant(fa, "model a " if fb is not None else "")
    bad_b = [] if fb is None else _constant(fb, "model b ")
    ok_a = [i for i in range(len(fa)) if i not in bad_a]
    ok_b = ok_a if fb is None else [j for j in range(len(fb)) if j not in bad_b]
    out = np.full((len(fa), len(fa) if fb is None else len(fb)), np.nan)
    if ok_a and ok_b:
        sub = m.matrix([fa[i] for i in ok_a], None if fb is None else [fb[j] for j in ok_b], **options)
        out[np.ix_(ok_a, ok_b)] = sub
    left = np.isnan(out[np.ix_(ok_a, ok_b)])
    if left.any():
        pairs = [(ok_a[i], ok_b[j]) for i, j in zip(*np.nonzero(left))]
        warn_undefined(f"{name} at layer pairs {pairs[:5]}{' ...' if len(pairs) > 5 else ''}",
                       "degenerate features (e.g. zero-norm samples or a non-positive HSIC)")
    return out


# Measure names in results.json: linear CKA is spelled out, as users of other libraries expect.
JSON_NAMES = {"cka": "cka_linear", "cka_debiased": "cka_linear_debiased"}


def json_name(measure: str) -> str:
    """The key of ``measure`` in results.json."""
    return JSON_NAMES.get(measure, measure)


def parse_measures(spec: str) -> list[str]:
    """A comma list of measure names (JSON spellings accepted), or "all"."""
    aliases = {v: k for k, v in JSON_NAMES.items()}
    names = list(MEASURES) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    names = [aliases.get(n, n) for n in names]
    unknown = [n for n in names if n not in MEASURES]
    if unknown or not names:
        raise LayerwiseError(f"unknown measure(s) {unknown or spec!r}: choose from {', '.join(MEASURES)} or 'all'")
    return names


__all__ = ["FAMILIES", "Invariances", "JSON_NAMES", "MEASURES", "Measure", "SAMPLE_CAP", "json_name", "layer_matrix",
           "parse_measures"]
