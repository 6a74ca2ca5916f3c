"""PSNR / SSIM / MS-SSIM (MONAI) full and in-mask, folder evaluation."""
from __future__ import annotations

import numpy as np
import pytest

from dxr_core.data import write_image
from dxr_core.errors import InputError
from dxr_core.metrics import evaluate_folders, format_table, image_metrics, ms_ssim, psnr, ssim


def _pair(shape=(96, 80), sigma=0.05, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape).astype(np.float32)
    return np.clip(ref + sigma * rng.standard_normal(shape), 0, 1).astype(np.float32), ref


def test_known_values():
    pred, ref = _pair()
    mse = float(np.mean((pred.astype(np.float64) - ref) ** 2))
    assert psnr(pred, ref) == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(ref, ref) == pytest.approx(1.0, abs=1e-5)
    worse, _ = _pair(sigma=0.2)
    assert ssim(worse, ref) < ssim(pred, ref) < 1 and ms_ssim(worse, ref) < ms_ssim(pred, ref)


def test_mask_all_equals_full_and_mask_selects():
    pred, ref = _pair((200, 200))
    full = image_metrics(pred, ref, np.ones_like(ref, bool))
    for k in ("psnr", "ssim", "ms_ssim"):
        assert full[k + "_lung"] == pytest.approx(full[k], abs=2e-3)
    pred2 = pred.copy()
    pred2[:, 100:] = ref[:, 100:]  # perfect right half
    mask = np.zeros_like(ref, bool)
    mask[:, 110:] = True
    m = image_metrics(pred2, ref, mask)
    assert m["psnr_lung"] > 80 and m["ssim_lung"] > 0.999 and m["psnr"] < 40
    with pytest.raises(InputError):
        image_metrics(pred, ref, np.zeros_like(ref, bool))
    with pytest.raises(InputError):
        psnr(pred[:10], ref)


def test_evaluate_folders(tmp_path):
    for i in range(2):
        pred, ref = _pair(seed=i)
        write_image(pred, tmp_path / "pred" / f"im{i}.png")
        write_image(ref, tmp_path / "ref" / f"im{i}.png")
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    assert res["count"] == 2 and 20 < res["mean"]["psnr"] < 30
    assert "mean" in format_table(res)
    with pytest.raises(InputError):
        evaluate_folders(tmp_path / "pred", tmp_path / "nope")
