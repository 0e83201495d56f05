"""CIFAR-10-C corruptions (Hendrycks & Dietterich, ICLR 2019): a distribution shift that is one.

The formulas and the severity constants (1–5) are those of the reference ``make_cifar_c.py``
(github.com/hendrycks/robustness, ImageNet-C/create_c), written with NumPy, SciPy, scikit-image and Pillow: no
OpenCV, no ImageMagick. Where the reference calls Wand's (ImageMagick's) motion blur (``motion_blur``, ``snow``),
the same one-sided Gaussian line kernel is built and correlated with ``scipy.ndimage``; its OpenCV steps
(affine warp, Canny edges, distance transform, histogram equalisation) have SciPy or scikit-image equivalents,
which each docstring names. All corruptions of CIFAR-10-C but frost are here: frost blends in crops of the
reference's six frost photographs, which are not here. The corruptions that move pixels are in
``corruptions_geometric``, snow and spatter in ``corruptions_weather``; this module is the entry point. The
maintained package ``imagecorruptions`` is not used: it imports ``pkg_resources`` (gone from current setuptools),
needs OpenCV, and carries the ImageNet-C (224-pixel) constants, not CIFAR's.

Each function maps one float64 image (H, W, 3) in [0, 1] to its corrupted copy in [0, 1]; random ones draw from the
``numpy.random.Generator`` they are given. ``corrupt_images`` applies one to a batch, image i drawing from
``default_rng([seed, index[i]])``, so an image is corrupted the same way whatever subset it is loaded in.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from layerwise.data.corruptions_geometric import elastic_transform, glass_blur, motion_blur, zoom_blur
from layerwise.data.corruptions_weather import snow, spatter
from layerwise.errors import LayerwiseError

Image = np.ndarray
Rng = np.random.Generator


def skimage(module: str):
    """A scikit-image module (the extra ``layerwise[corruptions]``), or one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(f"skimage.{module}")
    except ImportError:
        raise LayerwiseError("this corruption needs scikit-image: pip install 'layerwise[corruptions]'") from None


def gaussian_noise(x: Image, severity: int, rng: Rng) -> Image:
    """clip(x + N(0, c²)), c = 0.04, 0.06, 0.08, 0.09, 0.10."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x: Image, severity: int, rng: Rng) -> Image:
    """clip(Poisson(c·x) / c), c = 500, 250, 100, 75, 50 photons at full intensity."""
    c = [500, 250, 100, 75, 50][severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: Image, severity: int, rng: Rng) -> Image:
    """Salt and pepper on a fraction c = 0.01, 0.02, 0.03, 0.05, 0.07 of the values (skimage ``s&p``)."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    return np.clip(skimage("util").random_noise(x, mode="s&p", amount=c, rng=rng), 0, 1)


def speckle_noise(x: Image, severity: int, rng: Rng) -> Image:
    """clip(x + x·N(0, c²)), c = 0.06, 0.1, 0.12, 0.16, 0.2."""
    c = [0.06, 0.10, 0.12, 0.16, 0.20][severity - 1]
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)


def gaussian_blur(x: Image, severity: int, rng: Rng) -> Image:
    """A Gaussian filter of σ = 0.4, 0.6, 0.7, 0.8, 1 pixels per channel (``skimage.filters.gaussian``)."""
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    return np.clip(skimage("filters").gaussian(x, sigma=c, channel_axis=-1), 0, 1)


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The defocus kernel: the disk x² + y² ≤ r² on a 17×17 grid, normalised, smoothed by a 3×3 Gaussian of σ
    ``alias_blur`` (OpenCV's ``GaussianBlur``: a normalised 3-tap kernel, border reflect-101 = SciPy ``mirror``)."""
    from scipy.ndimage import correlate1d

    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    taps = np.exp(-np.array([-1.0, 0.0, 1.0]) ** 2 / (2 * alias_blur**2))
    taps /= taps.sum()
    return correlate1d(correlate1d(kernel, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")


def defocus_blur(x: Image, severity: int, rng: Rng) -> Image:
    """Each channel filtered with ``disk(r, σ)``, (r, σ) = (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2),
    (1.5, 0.1)."""
    from scipy.ndimage import correlate

    r, s = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][severity - 1]
    kernel = disk(r, s)
    return np.clip(np.stack([correlate(x[..., d], kernel, mode="mirror") for d in range(x.shape[-1])], -1), 0, 1)


def plasma_fractal(size: int, wibbledecay: float, rng: Rng) -> np.ndarray:
    """A (size, size) diamond-square height map in [0, 1] (size a power of two), the noise amplitude starting at
    100 and divided by ``wibbledecay`` at each halving of the step (the reference's ``plasma_fractal``)."""
    out = np.zeros((size, size))
    step, wibble = size, 100.0

    def mean_plus_noise(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = out[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        out[half:size:step, half:size:step] = mean_plus_noise(square)
        centres = out[half:size:step, half:size:step]
        corners = out[0:size:step, 0:size:step]
        out[0:size:step, half:size:step] = mean_plus_noise(centres + np.roll(centres, 1, axis=0)
                                                           + corners + np.roll(corners, -1, axis=1))
        out[half:size:step, 0:size:step] = mean_plus_noise(centres + np.roll(centres, 1, axis=1)
                                                           + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= wibbledecay
    out -= out.min()
    return out / out.max()


def fog(x: Image, severity: int, rng: Rng) -> Image:
    """clip((x + c·plasma) · m / (m + c)), m = max(x), (c, decay) = (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2),
    (1.5, 1.75)."""
    c, decay = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][severity - 1]
    h, w = x.shape[:2]
    size = 1 << (max(h, w, 2) - 1).bit_length()  # the power of two that covers the image
    m = x.max()
    foggy = x + c * plasma_fractal(size, decay, rng)[:h, :w, None]
    return np.clip(foggy * m / (m + c), 0, 1)


def brightness(x: Image, severity: int, rng: Rng) -> Image:
    """HSV value + c, c = 0.05, 0.1, 0.15, 0.2, 0.3 (clipped), back to RGB."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    color = skimage("color")
    hsv = color.rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1)


def saturate(x: Image, severity: int, rng: Rng) -> Image:
    """HSV saturation · a + b, (a, b) = (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2), back to RGB."""
    a, b = [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)][severity - 1]
    color = skimage("color")
    hsv = color.rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1)


def contrast(x: Image, severity: int, rng: Rng) -> Image:
    """clip((x − μ)·c + μ), μ each channel's mean, c = 0.75, 0.5, 0.4, 0.3, 0.15."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - mean) * c + mean, 0, 1)


def _pil(x: Image):
    from PIL import Image as PILImage

    return PILImage.fromarray(np.uint8(np.round(np.clip(x, 0, 1) * 255)))  # x holds k/255: round, not truncate


def pixelate(x: Image, severity: int, rng: Rng) -> Image:
    """Box-downsampled to a fraction c = 0.95, 0.9, 0.85, 0.75, 0.65 of the size and box-upsampled back (Pillow)."""
    from PIL import Image as PILImage

    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[:2]
    small = _pil(x).resize((int(w * c), int(h * c)), PILImage.BOX)
    return np.asarray(small.resize((w, h), PILImage.BOX), dtype=np.float64) / 255


def jpeg_compression(x: Image, severity: int, rng: Rng) -> Image:
    """Saved as JPEG of quality 80, 65, 58, 50, 40 and decoded (Pillow)."""
    from PIL import Image as PILImage

    quality = [80, 65, 58, 50, 40][severity - 1]
    buffer = io.BytesIO()
    _pil(x).save(buffer, "JPEG", quality=quality)
    with PILImage.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255


Corruption = Callable[[Image, int, Rng], Image]
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("gaussian_blur", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("fog", "brightness", "snow", "spatter"),  # frost needs the reference's photographs
    "digital": ("contrast", "saturate", "pixelate", "jpeg_compression", "elastic_transform"),
}
CORRUPTIONS: dict[str, Corruption] = {name: globals()[name] for names in FAMILIES.values() for name in names}
SEVERITIES = (1, 2, 3, 4, 5)


def check_corruption(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise LayerwiseError(f"unknown corruption {name!r}: pass one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise LayerwiseError(f"corruption severity {severity}: pass 1 to 5")


def corrupt_images(images: Tensor, name: str, severity: int, *, index: Sequence[int] | None = None,
                   seed: int = 0) -> Tensor:
    """(N, 3, H, W) images (uint8, or float in [0, 1]) corrupted as uint8, as CIFAR-10-C stores them; image i
    draws from ``default_rng([seed, index[i]])`` (``index`` defaults to 0..N−1)."""
    check_corruption(name, severity)
    if images.ndim != 4 or images.shape[1] != 3:
        raise LayerwiseError(f"corruptions apply to RGB images (N, 3, H, W), not {tuple(images.shape)}")
    fn = CORRUPTIONS[name]
    index = range(len(images)) if index is None else index
    unit = images.double() / 255 if images.dtype == torch.uint8 else images.double()
    out = np.empty((len(images), *images.shape[2:], 3), dtype=np.uint8)
    for i, (image, k) in enumerate(zip(unit.permute(0, 2, 3, 1).numpy(), index)):
        # the reference stores np.uint8(corrupted · 255), truncating; 1e-9 keeps k/255 · 255 = k − ε at k
        out[i] = np.uint8(fn(image.copy(), severity, np.random.default_rng([seed, int(k)])) * 255 + 1e-9)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


__all__ = ["CORRUPTIONS", "FAMILIES", "SEVERITIES", "check_corruption", "corrupt_images", "disk", "plasma_fractal",
           *CORRUPTIONS]
