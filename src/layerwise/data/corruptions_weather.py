"""CIFAR-10-C weather layered over the image: snow and spatter (frost is left out: it blends in crops of the
reference's six frost photographs, which are not here).

Part of ``layerwise.data.corruptions`` (the public entry point, which registers them); same conventions as there.
Constants: the reference ``make_cifar_c.py`` (github.com/hendrycks/robustness, ImageNet-C/create_c) for 32×32
images. Its OpenCV and ImageMagick steps are written with SciPy and scikit-image; each docstring says how.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from layerwise.data.corruptions_geometric import clipped_zoom, directional_blur

Image = np.ndarray
Rng = np.random.Generator

WATER = np.array([175, 238, 238]) / 255  # pale turquoise
MUD = np.array([63, 42, 20]) / 255  # mud brown


def _bytes(x: np.ndarray) -> np.ndarray:
    """⌊clip(x)·255⌋ as the reference's uint8 casts (1e-9: k/255·255 stays k)."""
    return np.floor(np.clip(x, 0, 1) * 255 + 1e-9)


def snow(x: Image, severity: int, rng: Rng) -> Image:
    """clip(x' + s + rot180(s)), x' = b·x + (1 − b)·max(x, 1.5·gray(x) + 0.5) (gray = 0.299 R + 0.587 G +
    0.114 B), s the snow layer: N(μ, σ²) per pixel, ``clipped_zoom`` by z, values below t set to 0, cut to 8 bits
    and motion-blurred (``directional_blur``, radius r, sigma ς, angle U(−135°, −45°), back to 8 bits; the
    reference uses Wand's motion blur). (μ, σ, z, t, r, ς, b) = (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)."""
    mu, sd, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8)][severity - 1]
    layer = clipped_zoom(rng.normal(loc=mu, scale=sd, size=x.shape[:2]), zoom)
    layer[layer < threshold] = 0
    layer = directional_blur(_bytes(layer) / 255, radius, sigma, rng.uniform(-135, -45))
    layer = (np.round(layer * 255) / 255)[..., None]
    gray = x @ np.array([0.299, 0.587, 0.114])
    lifted = blend * x + (1 - blend) * np.maximum(x, gray[..., None] * 1.5 + 0.5)
    return np.clip(lifted + layer + np.rot90(layer, k=2), 0, 1)


def equalize_hist(v: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` of integer levels 0..255: v ↦ round(255·(F(v) − F(v₀)) / (N − n(v₀))), F the
    cumulative histogram, v₀ the lowest level present, n its count (a constant image is returned as it is)."""
    counts = np.bincount(v.astype(np.int64).ravel(), minlength=256)
    low = int(np.flatnonzero(counts)[0])
    if counts[low] == v.size:
        return v.copy()
    lut = np.round(255 * (np.cumsum(counts) - counts[low]) / (v.size - counts[low]))
    return lut[v.astype(np.int64)]


def water_shading(liquid: np.ndarray) -> np.ndarray:
    """The light on spatter's water drops, from their 8-bit layer L (OpenCV in the reference): the Canny edges
    of L (thresholds 50, 150; here ``skimage.feature.canny``, σ = 0, whose gradient is the L2 norm where OpenCV
    takes |gx| + |gy|), the Euclidean distance d to the nearest edge (OpenCV: its 5×5 mask approximation),
    min(d, 20), a 3×3 mean cut to 8 bits, ``equalize_hist``, the correlation with [[−2, −1, 0], [−1, 1, 1],
    [0, 1, 2]] clipped to 0..255, a 3×3 mean again (means and correlation with border mode ``mirror`` =
    OpenCV's reflect-101)."""
    from layerwise.data.corruptions import skimage

    edges = skimage("feature").canny(liquid.astype(np.uint8), sigma=0, low_threshold=50, high_threshold=150)
    dist = ndimage.distance_transform_edt(~edges) if edges.any() else np.full(liquid.shape, 20.0)
    dist = np.floor(ndimage.uniform_filter(np.minimum(dist, 20), 3, mode="mirror") + 1e-9)  # ≥ 0, k stays k
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
    dist = np.clip(ndimage.correlate(equalize_hist(dist), emboss, mode="mirror"), 0, 255)
    return np.round(ndimage.uniform_filter(dist, 3, mode="mirror"))  # OpenCV's mean of 8-bit input is 8-bit


def spatter(x: Image, severity: int, rng: Rng) -> Image:
    """A liquid layer ℓ = G_γ(N(μ, σ²)) with values below t set to 0 (G_γ a Gaussian filter, mode ``nearest``).
    Water (severities 1–3): m = L·shade / max(L·shade) · i (L = ⌊255 ℓ⌋, shade = ``water_shading(L)``), and
    clip(x + m·(175, 238, 238)/255). Mud (4–5): m = G_i(1[ℓ > t]) with m < 0.8 set to 0, and
    x·(1 − m) + m·(63, 42, 20)/255. (μ, σ, γ, t, i, mud) = (0.62, 0.1, 0.7, 0.7, 0.5, no),
    (0.65, 0.1, 0.8, 0.7, 0.5, no), (0.65, 0.3, 1, 0.69, 0.5, no), (0.65, 0.1, 0.7, 0.69, 0.6, yes),
    (0.65, 0.1, 0.5, 0.68, 0.6, yes)."""
    mu, sd, gamma, threshold, intensity, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, False), (0.65, 0.1, 0.8, 0.7, 0.5, False), (0.65, 0.3, 1.0, 0.69, 0.5, False),
        (0.65, 0.1, 0.7, 0.69, 0.6, True), (0.65, 0.1, 0.5, 0.68, 0.6, True)][severity - 1]
    liquid = ndimage.gaussian_filter(rng.normal(loc=mu, scale=sd, size=x.shape[:2]), gamma, mode="nearest")
    liquid[liquid < threshold] = 0
    if not mud:
        level = _bytes(liquid)  # the reference's uint8 cast (it would wrap above 1; clipped here)
        m = level * water_shading(level)
        m = m / m.max() * intensity if m.max() > 0 else m  # no drop at all: nothing to add
        return np.clip(x + m[..., None] * WATER, 0, 1)
    m = ndimage.gaussian_filter((liquid > threshold).astype(np.float64), intensity, mode="nearest")
    m[m < 0.8] = 0
    return np.clip(x * (1 - m[..., None]) + m[..., None] * MUD, 0, 1)


__all__ = ["MUD", "WATER", "equalize_hist", "snow", "spatter", "water_shading"]
