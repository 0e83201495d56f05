"""CIFAR-10-C corruptions that move pixels: motion, zoom and glass blur and the elastic transform.

Part of ``layerwise.data.corruptions`` (the public entry point, which registers them); same conventions: one
float64 image (H, W, 3) in [0, 1] in, its corrupted copy in [0, 1] out, random draws from the
``numpy.random.Generator`` given. Constants: the reference ``make_cifar_c.py`` (github.com/hendrycks/robustness,
ImageNet-C/create_c) for 32×32 images. Where the reference calls OpenCV or ImageMagick (Wand), the same operation
is written with SciPy; each docstring says which. scikit-image's ``gaussian`` is SciPy's ``gaussian_filter`` with
its defaults (mode ``nearest``, truncate 4), which is what is called here.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

Image = np.ndarray
Rng = np.random.Generator


def motion_kernel(radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` as one 2-D correlation kernel (centred, odd side): a one-sided Gaussian
    line of width w = 2·radius + 1, weight k_i ∝ exp(−i²/2σ²) (i = 0..w−1, Σ k_i = 1) at the offset
    (row, column) = (⌈i·sin θ − ½⌉, ⌈i·cos θ − ½⌉), θ = ``angle`` in degrees, so
    out(r, c) = Σ_i k_i · x(r + ⌈i sin θ − ½⌉, c + ⌈i cos θ − ½⌉) (ImageMagick's effect.c and gem.c)."""
    width = 2 * int(math.ceil(radius)) + 1
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i**2) / (2 * sigma**2))
    weights /= weights.sum()
    theta = math.radians(angle)
    rows = np.ceil(i * math.sin(theta) - 0.5).astype(int)
    cols = np.ceil(i * math.cos(theta) - 0.5).astype(int)
    half = int(max(np.abs(rows).max(), np.abs(cols).max()))
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    np.add.at(kernel, (half + rows, half + cols), weights)  # two taps may round to one pixel
    return kernel


def directional_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Each channel of ``x`` (H, W) or (H, W, C) correlated with ``motion_kernel``, the border extended by its
    edge pixels (ImageMagick's default virtual pixels = SciPy mode ``nearest``)."""
    kernel = motion_kernel(radius, sigma, angle)
    if x.ndim == 2:
        return ndimage.correlate(x, kernel, mode="nearest")
    return np.stack([ndimage.correlate(x[..., d], kernel, mode="nearest") for d in range(x.shape[-1])], -1)


def motion_blur(x: Image, severity: int, rng: Rng) -> Image:
    """``directional_blur`` at an angle θ ~ U(−45°, 45°), (radius, σ) = (6, 1), (6, 1.5), (6, 2), (8, 2),
    (9, 2.5), rounded to 8 bits as the reference's PNG round trip through ImageMagick is. The reference calls
    Wand's ``motion_blur``; this builds the same line kernel (``motion_kernel``) and convolves with SciPy."""
    radius, sigma = [(6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)][severity - 1]
    blurred = directional_blur(x, radius, sigma, rng.uniform(-45, 45))
    return np.clip(np.round(blurred * 255) / 255, 0, 1)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre ⌈H/z⌉ × ⌈W/z⌉ crop of ``x`` magnified z times (``scipy.ndimage.zoom``, order 1) and cut back to
    H × W about the centre (the reference's ``clipped_zoom``; channels, if any, are not zoomed)."""
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor) + (1,) * (x.ndim - 2), order=1)
    top, left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[top:top + h, left:left + w]


def zoom_blur(x: Image, severity: int, rng: Rng) -> Image:
    """(x + Σ_z clipped_zoom(x, z)) / (n + 1) over z = 1, 1.01, …, 1 + 0.01(n − 1), n = 7, 12, 16, 21, 26 (the
    reference's ``np.arange(1, 1.06 … 1.26, 0.01)``, whose float end points give these counts; z = 1 is x itself,
    which is so counted twice)."""
    n = [7, 12, 16, 21, 26][severity - 1]
    out = x.copy()
    for factor in 1 + 0.01 * np.arange(n):
        out += clipped_zoom(x, factor)
    return np.clip(out / (n + 1), 0, 1)


def shuffle_pixels(x: np.ndarray, rng: Rng) -> np.ndarray:
    """One pass of glass blur's local shuffle as the reference computes it: each pixel (h, w) with 2 ≤ h < H and
    2 ≤ w < W takes the value of (h + dy, w + dx), dy, dx uniform in {−1, 0}. (The reference visits the pixels
    from the bottom right and writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``; NumPy's views make that a copy,
    not a swap, from pixels not yet visited: so this vectorised form is the same operation.)"""
    h, w = x.shape[:2]
    dy, dx = rng.integers(-1, 1, size=(2, h - 2, w - 2))
    out = x.copy()
    out[2:, 2:] = x[np.arange(2, h)[:, None] + dy, np.arange(2, w)[None, :] + dx]
    return out


def glass_blur(x: Image, severity: int, rng: Rng) -> Image:
    """g(shuffle^k(⌊g(x)·255⌋ / 255)), g a Gaussian filter of σ per channel (mode ``nearest``),
    (σ, k passes of ``shuffle_pixels``) = (0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2); the shuffle moves
    pixels by at most one (the reference's max_delta = 1 at every severity)."""
    sigma, passes = [(0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)][severity - 1]
    out = np.floor(ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest") * 255 + 1e-9) / 255  # uint8 there
    for _ in range(passes):
        out = shuffle_pixels(out, rng)
    return np.clip(ndimage.gaussian_filter(out, (sigma, sigma, 0), mode="nearest"), 0, 1)


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix M with M·(p, 1) = q for three point pairs p → q (OpenCV's ``getAffineTransform``)."""
    return np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst).T


def elastic_warp(x: Image, inverse: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> Image:
    """y(r, c) = x(A·(r, c, 1)) (``inverse`` = A, 2×3 in (row, column) coordinates; bilinear, border mode
    ``mirror`` = OpenCV's ``warpAffine`` with BORDER_REFLECT_101), then z(r, c) = y(r + dy, c + dx) (bilinear,
    mode ``reflect``: the reference's ``map_coordinates``), per channel."""
    rows, cols = np.indices(x.shape[:2], dtype=np.float64)
    out = np.empty_like(x)
    for d in range(x.shape[-1]):
        warped = ndimage.affine_transform(x[..., d], inverse[:, :2], offset=inverse[:, 2], order=1, mode="mirror")
        out[..., d] = ndimage.map_coordinates(warped, [rows + dy, cols + dx], order=1, mode="reflect")
    return out


def elastic_transform(x: Image, severity: int, rng: Rng) -> Image:
    """A random affine map then a smooth random displacement, (α, σ, a) = (0, 0, 0.08), (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03) × 32 (the image side): the affine moves the
    three points (c ± s, c ± s) (c the centre, s = side // 3) by U(−a, a) each coordinate; the displacement is
    dy, dx = α · G_σ(U(−1, 1)) (G_σ a Gaussian filter, mode ``reflect``, truncate 3). OpenCV's affine fit and
    warp are ``affine_from_points`` and SciPy's ``affine_transform`` (``elastic_warp``)."""
    alpha, sigma, jitter = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                            (0.1, 0.03, 0.03)][severity - 1]
    h, w = x.shape[:2]
    side = min(h, w)
    alpha, sigma, jitter = alpha * side, sigma * side, jitter * side
    cy, cx, s = h // 2, w // 2, side // 3
    src = np.array([[cy + s, cx + s], [cy - s, cx + s], [cy - s, cx - s]], dtype=np.float64)  # (row, column)
    dst = src + rng.uniform(-jitter, jitter, size=src.shape)
    inverse = affine_from_points(dst, src)  # output → input, as warpAffine samples
    dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
              for _ in range(2))
    return np.clip(elastic_warp(x, inverse, dy, dx), 0, 1)


__all__ = ["affine_from_points", "clipped_zoom", "directional_blur", "elastic_transform", "elastic_warp",
           "glass_blur", "motion_blur", "motion_kernel", "shuffle_pixels", "zoom_blur"]
