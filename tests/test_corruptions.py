"""CIFAR-10-C corruptions (``data.corruptions``) and the ``cifar10-c:NAME:SEVERITY`` / ``NAME:classes=…`` data specs."""

from __future__ import annotations

import colorsys
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from layerwise.data import load_dataset
from layerwise.data.corruptions import (CORRUPTIONS, FAMILIES, brightness, contrast, corrupt_images, disk,
                                        gaussian_noise, shot_noise, speckle_noise)
from layerwise.data.variants import parse_variant
from layerwise.errors import LayerwiseError


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """uint8 test images with texture at every scale, as photographs have (smoothed noise at σ = 0.5 … 8
    pixels, weighted √σ, stretched to 0..255), so blur and pixelation change them as they change photographs."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = sum(gaussian_filter(rng.uniform(-1, 1, (32, 32, 3)), (s, s, 0)) * s**0.5 for s in (0.5, 1, 2, 4, 8))
        out.append(np.uint8((img - img.min()) / (img.max() - img.min()) * 255))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _unit(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).numpy().astype(np.float64) / 255


# ---------------------------------------------------------------- against float64 formulas of the reference


@pytest.mark.parametrize("severity, scale", [(1, 0.04), (3, 0.08), (5, 0.10)])
def test_gaussian_noise_is_x_plus_normal_noise_clipped(severity, scale):
    x = _unit(_images(1)[0])
    expected = np.clip(x + np.random.default_rng(5).standard_normal(x.shape) * scale, 0, 1)
    np.testing.assert_allclose(gaussian_noise(x, severity, np.random.default_rng(5)), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("severity, photons", [(1, 500), (5, 50)])
def test_shot_noise_is_poisson_counts_over_the_photon_number(severity, photons):
    x = _unit(_images(1)[0])
    expected = np.clip(np.random.default_rng(2).poisson(x * photons) / photons, 0, 1)
    np.testing.assert_array_equal(shot_noise(x, severity, np.random.default_rng(2)), expected)
    rel = np.abs(shot_noise(x, severity, np.random.default_rng(3)) - x)[x > 0.2] / x[x > 0.2]
    assert 0.3 < rel.mean() * np.sqrt(photons * 0.5) < 3  # Poisson: relative error ~ 1/√(c·x)


def test_speckle_noise_is_multiplicative():
    x = _unit(_images(1)[0])
    noise = np.random.default_rng(4).normal(size=x.shape, scale=0.2)
    np.testing.assert_allclose(speckle_noise(x, 5, np.random.default_rng(4)), np.clip(x + x * noise, 0, 1),
                               atol=1e-15)


@pytest.mark.parametrize("severity, c", [(1, 0.75), (2, 0.5), (5, 0.15)])
def test_contrast_shrinks_towards_each_channels_mean(severity, c):
    x = _unit(_images(1)[0])
    got = contrast(x, severity, np.random.default_rng(0))
    for ch in range(3):
        mu = float(np.mean(x[..., ch], dtype=np.float64))
        np.testing.assert_allclose(got[..., ch], np.clip((x[..., ch] - mu) * c + mu, 0, 1), atol=1e-14)


@pytest.mark.parametrize("severity, c", [(1, 0.05), (5, 0.3)])
def test_brightness_adds_to_the_hsv_value(severity, c):
    """Against Python's own colorsys HSV, pixel by pixel."""
    x = _unit(_images(1)[0])[::5, ::5]
    got = brightness(x, severity, np.random.default_rng(0))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*x[i, j])
            np.testing.assert_allclose(got[i, j], colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)), atol=1e-12)


def test_defocus_kernel_is_a_normalised_smoothed_disk():
    k = disk(1.0, 0.2)
    assert k.shape == (17, 17) and k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k.T, atol=1e-15)  # symmetric
    assert k[8, 8] == k.max() and k[8, 10] < 1e-3  # radius 1: the mass stays within one pixel of the centre
    g = np.exp(-1 / (2 * 0.2**2))
    taps = np.array([g, 1.0, g]) / (1 + 2 * g)
    plus = np.zeros((17, 17))
    plus[8, 8], plus[7, 8], plus[9, 8], plus[8, 7], plus[8, 9] = 0.2, 0.2, 0.2, 0.2, 0.2
    expected = np.zeros((19, 19))
    for di in range(3):
        for dj in range(3):
            expected[di:di + 17, dj:dj + 17] += taps[di] * taps[dj] * plus
    np.testing.assert_allclose(k, expected[1:-1, 1:-1], atol=1e-15)  # no mass reaches the border here


# ---------------------------------------------------------------- every corruption: determinism, order, range


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_replays_its_seed_and_stays_an_image(name):
    x = _images(3)
    a, b = corrupt_images(x, name, 3, seed=1), corrupt_images(x, name, 3, seed=1)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    # an image gets its own noise by its index, whatever batch it is in
    assert torch.equal(corrupt_images(x[2:], name, 3, index=[2], seed=1), a[2:])


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "saturate"])  # saturate: ±, not ordered
def test_psnr_falls_with_severity(name):
    x = _images(8).double()

    def psnr(sev: int) -> float:
        mse = float(((corrupt_images(_images(8), name, sev).double() - x) ** 2).mean())
        return 10 * np.log10(255**2 / mse)

    values = [psnr(s) for s in (1, 3, 5)]
    assert values[0] > values[1] > values[2], values


def test_the_families_of_the_paper_are_there():
    assert set(FAMILIES) == {"noise", "blur", "weather", "digital"} and all(FAMILIES.values())


# ---------------------------------------------------------------- data specs


def test_corrupted_cifar_is_cifar_with_the_same_labels_and_picks(monkeypatch):
    from layerwise.data import load as load_module
    from layerwise.data.dataset import LayerwiseDataset

    images, labels = _images(40), torch.arange(40) % 10
    monkeypatch.setattr(load_module, "load_cifar10", lambda split, data_dir: LayerwiseDataset(
        "cifar10", "image", images=images, labels=labels, class_names=[str(i) for i in range(10)]))
    clean = load_dataset("cifar10", "test", limit=12, seed=3)
    shifted = load_dataset("cifar10-c:contrast:5", "test", limit=12, seed=3)
    assert torch.equal(clean.labels, shifted.labels) and shifted.name == "cifar10-c:contrast:5"
    expected = torch.stack([torch.from_numpy(np.uint8(contrast(_unit(img), 5, None) * 255 + 1e-9)).permute(2, 0, 1)
                            for img in clean.images])
    assert torch.equal(shifted.images, expected)
    whole = load_dataset("cifar10-c:gaussian_noise:2", "test")
    part = load_dataset("cifar10-c:gaussian_noise:2", "test", limit=12, seed=3)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    assert torch.equal(part.images, whole.images[order])  # the noise of an image does not depend on the pick
    five = load_dataset("cifar10:classes=5-9", "test")
    assert five.class_names == ["5", "6", "7", "8", "9"] and five.num_classes == 5
    assert torch.equal(five.labels, labels[labels >= 5] - 5)
    odd = load_dataset("cifar10-c:fog:1:classes=7,1", "test")
    assert set(odd.labels.tolist()) == {0, 1} and odd.class_names == ["7", "1"] and len(odd) == 8


@pytest.mark.parametrize("spec, message", [
    ("cifar10-c:snowstorm:3", "unknown corruption 'snowstorm'"),
    ("cifar10-c:fog:0", "severity 0"),
    ("cifar10-c:fog:six", "severity 'six'"),
    ("cifar10-c:fog", "cifar10-c:CORRUPTION:SEVERITY"),
    ("cifar10:classes=4-2", "no class list"),
    ("cifar10:classes=1,1", "no class list"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(LayerwiseError, match=message) as e:
        parse_variant(spec)
    assert "\n" not in str(e.value)


def test_a_bad_corruption_on_the_command_line_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "layerwise.cli", "exit", "--model", "mlp-plain", "--data",
                             "cifar10-c:snowstorm:3", "--out", str(tmp_path / "e")],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                                 "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "unknown corruption 'snowstorm'" in result.stderr and result.stderr.count("\n") == 1
