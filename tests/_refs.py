"""Independent float64 reference implementations: straightforward formulas written out by hand.

- similarity measures (numpy/scipy) for the measure, streaming and analysis tests;
- readout arithmetic (torch float64): LayerNorm, Linear, GELU, cosine and cross-entropy by log-sum-exp,
  for the objective, trainer and layer-stack tests.

Nothing here calls layerwise: a test compares the library against these formulas.
"""

import itertools
import math

import numpy as np
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch


def centre(x):
    return x - x.mean(0)


def hsic_biased(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h)


def cka(x, y):
    k, l = x @ x.T, y @ y.T
    return hsic_biased(k, l) / np.sqrt(hsic_biased(k, k) * hsic_biased(l, l))


def hsic_unbiased(k, l):
    """Song et al. 2012 eq. (5) with explicit N×N matrices."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def hsic_unbiased_loops(k, l):
    """The U-statistic over distinct ordered quadruples: mean of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n, total, count = len(k), 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def cka_debiased(x, y):
    k, l = x @ x.T, y @ y.T
    return hsic_unbiased(k, l) / np.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))


def cka_rbf(x, y, factor=1.0):
    def gram(z):
        d = scipy.spatial.distance.pdist(z)
        sigma = factor * np.median(d)
        return np.exp(-scipy.spatial.distance.squareform(d) ** 2 / (2 * sigma ** 2))
    k, l = gram(x), gram(y)
    return hsic_biased(k, l) / np.sqrt(hsic_biased(k, k) * hsic_biased(l, l))


def cosine(x, y):
    xc, yc = centre(x), centre(y)
    return np.mean([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(xc, yc)])


def _inv_sqrt(c):
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w ** -0.5) @ v.T


def cca_rhos(x, y):
    """Canonical correlations as singular values of Σxx^-1/2 Σxy Σyy^-1/2 (full-rank inputs)."""
    xc, yc = centre(x), centre(y)
    m = _inv_sqrt(xc.T @ xc) @ xc.T @ yc @ _inv_sqrt(yc.T @ yc)
    return np.linalg.svd(m, compute_uv=False)[:min(x.shape[1], y.shape[1])]


def svcca(x, y, keep=0.99):
    def reduce(z):
        zc = centre(z)
        u, s, _ = np.linalg.svd(zc, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), keep) + 1)
        return u[:, :k] * s[:k]
    return cca_rhos(reduce(x), reduce(y)).mean()


def pwcca(x, y):
    xc, yc = centre(x), centre(y)
    wx = _inv_sqrt(xc.T @ xc)
    m = wx @ xc.T @ yc @ _inv_sqrt(yc.T @ yc)
    u, rho, _ = np.linalg.svd(m, full_matrices=False)
    h = xc @ wx @ u  # canonical variates of X
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(1)
    return (alpha * rho).sum() / alpha.sum()


def procrustes(x, y):
    xc, yc = centre(x), centre(y)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    d = max(x.shape[1], y.shape[1])
    xp, yp = np.pad(xc, ((0, 0), (0, d - x.shape[1]))), np.pad(yc, ((0, 0), (0, d - y.shape[1])))
    r, _ = scipy.linalg.orthogonal_procrustes(yp, xp)
    return 1 - np.linalg.norm(xp - yp @ r) ** 2 / 2


def rsa(x, y, rdm="correlation", method="spearman"):
    a, b = scipy.spatial.distance.pdist(x, rdm), scipy.spatial.distance.pdist(y, rdm)
    return (scipy.stats.spearmanr if method == "spearman" else scipy.stats.pearsonr)(a, b)[0]


def pnka_per_sample(x, y):
    def kern(z):
        z = centre(z)
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        return z @ z.T
    kx, ky = kern(x), kern(y)
    return np.array([kx[i] @ ky[i] / (np.linalg.norm(kx[i]) * np.linalg.norm(ky[i])) for i in range(len(x))])


def _knn_masks(x, k):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kern = x @ x.T
    s = kern.copy()
    np.fill_diagonal(s, -1e8)
    idx = np.argsort(-s, axis=1)[:, :k]
    mask = np.zeros_like(kern)
    np.put_along_axis(mask, idx, 1.0, axis=1)
    return kern, mask


def mutual_knn(x, y, k):
    _, ma = _knn_masks(x, k)
    _, mb = _knn_masks(y, k)
    return ((ma * mb).sum(1) / k).mean()


def _hsic_u_platonic(a, b):
    """Huh et al.'s hsic_unbiased, verbatim in numpy (note the transpose and the full matmul)."""
    m = len(a)
    a, b = a.copy(), b.copy()
    np.fill_diagonal(a, 0)
    np.fill_diagonal(b, 0)
    return ((a * b.T).sum() + a.sum() * b.sum() / ((m - 1) * (m - 2)) - 2 * (a @ b).sum() / (m - 2)) / (m * (m - 3))


def cknna(x, y, k):
    ka, ma = _knn_masks(x, k)
    kb, mb = _knn_masks(y, k)
    m = ma * mb
    kl = _hsic_u_platonic(m * ka, m * kb)
    return kl / np.sqrt(_hsic_u_platonic(ma * ka, ma * ka) * _hsic_u_platonic(mb * kb, mb * kb))


# ---------------------------------------------------------------- readout arithmetic (torch, float64)


def layer_norm64(x, weight, bias, eps):
    """(x − mean) / sqrt(biased var + eps) · γ + β over the last dimension."""
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight.double() + bias.double()


def linear64(x, weight, bias=None):
    """x Wᵀ + b."""
    y = x.double() @ weight.double().T
    return y if bias is None else y + bias.double()


def gelu64(x):
    """The exact (erf) GELU: x · Φ(x)."""
    x = x.double()
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def cross_entropy64(logits, targets):
    """Mean over rows of log Σⱼ exp(zⱼ) − z_y, with the row maximum taken out of the exponent."""
    z = logits.double()
    m = z.max(-1).values
    lse = torch.log(torch.exp(z - m[:, None]).sum(-1)) + m
    return (lse - z[torch.arange(len(targets)), targets]).mean()


def next_token_ce64(logits, ids, mask=None):
    """Language-model CE: logits at position t score token t+1; targets at padded positions dropped."""
    keep = torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return cross_entropy64(logits[:, :-1][keep], ids[:, 1:][keep])


def mean_cosine64(a, b):
    """mean_i aᵢ·bᵢ / (|aᵢ| |bᵢ|)."""
    a, b = a.double(), b.double()
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean()


def own_mlp_hidden64(model, x):
    """h⁰..hᴸ (B, D) of the project's own residual MLP, from its weights in float64:
    h⁰ = W_in x + b_in, hˡ = hˡ⁻¹ + gelu(Wₗ hˡ⁻¹ + bₗ)."""
    h = linear64(x.flatten(1), model.inp.weight, model.inp.bias)
    hs = [h]
    for block in model.blocks:
        assert block.residual, "this reference is for the residual MLP"
        h = h + gelu64(linear64(h, block.fc.weight, block.fc.bias))
        hs.append(h)
    return hs


def linear_layer_weights(num_layers):
    """λ_ℓ = 2ℓ / (L(L+1)) for ℓ = 1..L, as float64."""
    return torch.tensor([2 * ell / (num_layers * (num_layers + 1)) for ell in range(1, num_layers + 1)],
                        dtype=torch.float64)
