"""Restoration measures: added noise and invented structure in flat regions, the lung-field proxy."""
from __future__ import annotations

import numpy as np
import pytest

from dxr_core.metrics.restoration import flat_mask, lung_proxy_mask, restoration_measures


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
