"""Restoration measures: added noise and invented structure in flat regions, the lung-field proxy."""
from __future__ import annotations

import numpy as np
import pytest

from dxr_core.metrics.restoration import flat_mask, headroom_db, lung_proxy_mask, noise_sigma, restoration_measures


def _chest(n: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] / n
    img = 0.6 + 0.2 * np.sin(6 * x) * np.cos(4 * y)
    for cx in (0.3, 0.7):  # two dark "lungs"
        img[((x - cx) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1] -= 0.35
    return img.astype(np.float32)


def test_identical_noisy_and_sharpened_outputs():
    ref = _chest()
    same = restoration_measures(ref, ref, lung_proxy_mask(ref))
    assert same["noise"] == pytest.approx(1.0) and same["invented"] == pytest.approx(0.0, abs=1e-12)
    assert same["psnr"] > 60 and same["ssim_lung"] == pytest.approx(1.0, abs=1e-6)
    noisy = ref + np.random.default_rng(0).normal(0, 0.02, ref.shape).astype(np.float32)
    m = restoration_measures(noisy, ref)
    assert m["noise"] > 2.0 and m["invented"] > 1e-4 and m["psnr"] < 40
    assert flat_mask(ref).mean() == pytest.approx(0.25, abs=0.05)


def test_lung_proxy_is_dark_and_central():
    ref = _chest()
    lungs = lung_proxy_mask(ref)
    assert 0.15 < lungs.mean() < 0.3 and ref[lungs].mean() < ref[~lungs].mean() - 0.2
    assert not lungs[:5].any() and not lungs[:, -5:].any()


def test_noise_sigma_and_headroom_follow_the_added_noise():
    from dxr_core.degrade.resize import resize_torch
    from dxr_core.diffusion.enhancer import bicubic_upsample

    def bicubic_of_area(img):  # the degradation of the held-out pairs (`dxr make-pairs --method area`), undone
        lq = resize_torch(img, (img.shape[0] // 2, img.shape[1] // 2), "area")
        return bicubic_upsample(lq, img.shape)

    ref = _chest(256)
    rng = np.random.default_rng(1)
    assert noise_sigma(ref) < 0.002  # smooth apart from two edges: the median ignores them
    assert noise_sigma(ref + rng.normal(0, 0.01, ref.shape)) == pytest.approx(0.01, rel=0.1)
    # a smooth image: bicubic's error is the unpredictable part of the noise, so there is little headroom
    y, x = np.mgrid[0:256, 0:256] / 256
    smooth = 0.6 + 0.2 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 0.01, (256, 256))
    room = headroom_db(bicubic_of_area(smooth), smooth)
    assert 0 <= room < 1.5
    # sharp edges and little noise: bicubic's error is mostly predictable, far more headroom
    quiet = ref + rng.normal(0, 0.001, ref.shape)
    assert headroom_db(bicubic_of_area(quiet), quiet) > room + 5
    with pytest.raises(ValueError, match="2x2"):
        noise_sigma(np.zeros((1, 5)))
