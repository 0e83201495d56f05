"""Registry of layer-similarity measures and `layer_matrix`, the L_a×L_b matrix over all layer pairs.

Every measure is computed in float64. Measures that need N×N structure (`needs_pairwise`) run on a
random subset of at most `SAMPLE_CAP` samples (fixed seed, same rows for both models), with a warning.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from layerwise.errors import LayerwiseError
from layerwise.measures import cca, cka, cosine, knn, pnka, procrustes, rsa
from layerwise.measures._util import warn_undefined

SAMPLE_CAP = 2000  # N×N float64 kernels per layer: 32 MB each at the cap

INVARIANCES = frozenset({"orthogonal", "isotropic_scaling", "translation", "invertible_linear", "permutation"})


@dataclass(frozen=True)
class Measure:
    """A similarity measure. `fn(X, Y, **options) -> float`; `matrix(feats_a, feats_b|None, **options)`
    gives all pairs at once, reusing per-layer work (rows: feats_a; feats_b=None: within-model)."""

    name: str
    fn: Callable[..., float]
    higher_is_more_similar: bool
    invariances: frozenset[str]
    needs_pairwise: bool
    equal_width: bool
    description: str
    matrix: Callable[..., np.ndarray]
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not self.invariances <= INVARIANCES:
            raise ValueError(f"unknown invariances {set(self.invariances - INVARIANCES)}")


def _pairwise(prepare: Callable, pair: Callable, symmetric: bool = True) -> Callable[..., np.ndarray]:
    """Matrix from a per-layer `prepare` (done once per layer) and a cheap `pair` on prepared layers."""

    def matrix(feats_a, feats_b=None, **options) -> np.ndarray:
        pa = [prepare(x, **options) for x in feats_a]
        pb = pa if feats_b is None else [prepare(x, **options) for x in feats_b]
        m = np.empty((len(pa), len(pb)))
        for i in range(len(pa)):
            for j in range(len(pb)):
                if feats_b is None and symmetric and j < i:
                    m[i, j] = m[j, i]  # within-model and symmetric: each pair once
                else:
                    m[i, j] = pair(pa[i], pb[j])
        return m

    return matrix


_ROT = frozenset({"orthogonal", "isotropic_scaling", "translation", "permutation"})
_KNN = frozenset({"orthogonal", "isotropic_scaling", "permutation"})  # normalised, uncentred features
_M = [
    Measure("cos", cosine.cosine, True, frozenset({"isotropic_scaling", "translation"}), False, True,
            "sample-wise cosine of globally centred features, mean over samples",
            cosine.cosine_pairs),
    Measure("cka", cka.cka, True, _ROT, False, False, "linear CKA (biased HSIC), Kornblith et al. 2019",
            partial(cka.linear_matrix, debiased=False)),
    Measure("cka_debiased", cka.cka_debiased, True, _ROT, False, False,
            "linear CKA with unbiased HSIC (Song et al. 2012; Nguyen et al. 2021)",
            partial(cka.linear_matrix, debiased=True)),
    Measure("cka_rbf", cka.cka_rbf, True, _ROT, True, False,
            "RBF-kernel CKA, σ = factor × median off-diagonal distance",
            _pairwise(cka.rbf_prepare, cka.rbf_pair)),
    Measure("cka_minibatch", cka.cka_minibatch, True, _ROT, False, False,
            "minibatch debiased linear CKA (Nguyen et al. 2021), mean HSICs then ratio",
            cka.minibatch_matrix),
    Measure("cca", cca.mean_cca, True, _ROT | {"invertible_linear"}, False, False,
            "mean canonical correlation", _pairwise(cca.cca_prepare, cca.cca_pair)),
    Measure("svcca", cca.svcca, True, _ROT, False, False,
            "SVCCA: CCA on directions explaining 99% variance (Raghu et al. 2017)",
            _pairwise(cca.svcca_prepare, cca.cca_pair)),
    Measure("pwcca", cca.pwcca, True, frozenset({"isotropic_scaling", "translation", "permutation"}), False, False,
            "projection-weighted CCA (Morcos et al. 2018); weights from the row layer",
            _pairwise(cca.cca_prepare, cca.pwcca_pair, symmetric=False), symmetric=False),
    Measure("procrustes", procrustes.procrustes, True, _ROT, False, False,
            "orthogonal Procrustes similarity ‖XᵀY‖_* = 1 - d²/2",
            _pairwise(procrustes.procrustes_prepare, procrustes.procrustes_pair)),
    # Correlation RDMs centre each sample across features, so rotations of the features change them.
    Measure("rsa", rsa.rsa, True, frozenset({"isotropic_scaling", "permutation"}), True, False,
            "correlation between representational dissimilarity matrices (1 - Pearson RDM by default)",
            _pairwise(rsa.rsa_prepare, rsa.rsa_pair)),
    Measure("pnka", pnka.pnka, True, _ROT, False, False,
            "pointwise normalized kernel alignment (Kolling et al. 2023), mean over samples",
            _pairwise(pnka.pnka_prepare, pnka.pnka_pair)),
    Measure("mutual_knn", knn.mutual_knn, True, _KNN, True, False,
            "mutual k-NN alignment (Huh et al. 2024)", _pairwise(knn.knn_prepare, knn.mutual_knn_pair)),
    Measure("cknna", knn.cknna, True, _KNN, True, False,
            "centred kernel nearest-neighbour alignment (Huh et al. 2024); asymmetric like theirs",
            _pairwise(knn.knn_prepare, knn.cknna_pair, symmetric=False), symmetric=False),
]
MEASURES: dict[str, Measure] = {m.name: m for m in _M}


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
DEFAULT_MEASURES = "cos,cka,cka_debiased"


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


__all__ = ["DEFAULT_MEASURES", "JSON_NAMES", "MEASURES", "Measure", "SAMPLE_CAP", "json_name", "layer_matrix",
           "parse_measures"]
