"""The shipped DDPM-HQ weights: small, documented, loadable and useful. The default (trained on real radiographs) is
better than bicubic on windows of real radiographs of held-out patients; the phantom model is better than bicubic on a
held-out phantom DRR pair (the data it was fine-tuned on: coarse clinical-CT DRR -> fine phantom DRR). See their
model cards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dxr_core.data import pair_window
from dxr_core.diffusion import DEFAULT_WEIGHTS, load_enhancer
from dxr_core.diffusion.enhancer import PHANTOM_WEIGHTS, bicubic_upsample
from dxr_core.metrics import psnr, ssim
from dxr_core.phantom import drr_pair

HELD_OUT_SEED = 777_001  # training used seeds 1_100_000 .. 1_100_039
HELD_OUT_REAL = Path(__file__).parent / "data" / "real_cxr_heldout"  # test patients of the split (ATTRIBUTION.md)


def _one_thread(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def test_default_weights_beat_bicubic_on_held_out_real_radiographs():
    """The default model on 2x area-downsampled windows of real radiographs of two test patients (its defaults: one
    evaluation): higher PSNR and SSIM than bicubic upsampling on each, and no added noise."""
    from dxr_core.data.pairs import read_image
    from dxr_core.degrade import degrade
    from dxr_core.metrics.restoration import flat_mask, restoration_measures

    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 20e6
    card = DEFAULT_WEIGHTS.with_suffix(".md").read_text()
    for word in ("dxr make-pairs", "dxr train ddpm-hq", "--t-range", "held-out", "PSNR", "SSIM", "bicubic", "CC BY"):
        assert word in card
    enh = load_enhancer()
    assert enh.default_sampling == ("ddim", 1) and enh.meta["iteration"] > 0
    files = sorted(HELD_OUT_REAL.glob("*.png"))
    assert len(files) == 2
    for f in files:
        hq = read_image(f)
        lq = degrade(hq, "area", seed=0, scale=2)
        pred = _one_thread(lambda: enh.enhance(lq, scale=2, seed=0, tile=None))
        bic = bicubic_upsample(lq, hq.shape)
        inner = np.s_[8:-8, 8:-8]  # both upsamplers see the same window edge; compare away from it
        m = restoration_measures(pred[inner], hq[inner], flat=flat_mask(hq[inner]))
        b = restoration_measures(bic[inner], hq[inner], flat=flat_mask(hq[inner]))
        print(f"{f.name}: DDPM-HQ {m['psnr']:.2f} dB / SSIM {m['ssim']:.4f} / noise {m['noise']:.2f}x, "
              f"bicubic {b['psnr']:.2f} dB / {b['ssim']:.4f}")
        assert m["psnr"] > b["psnr"] + 0.1 and m["ssim"] >= b["ssim"] and m["noise"] <= 1.1


def test_phantom_weights_small_documented_and_useful():
    assert PHANTOM_WEIGHTS.is_file() and PHANTOM_WEIGHTS.stat().st_size < 20e6
    card = PHANTOM_WEIGHTS.with_suffix(".md").read_text()
    for word in ("dxr train ddpm-hq", "pairs_from_phantom", "--init", "iterations", "PSNR", "SSIM"):
        assert word in card
    enh = load_enhancer(PHANTOM_WEIGHTS)
    assert enh.meta["iteration"] > 0 and enh.diffusion.prediction in ("v", "eps")
    # the scale the model serves: a 512 DRR of the whole chest -> 1024 (one lung window, to stay cheap)
    lq, hq = drr_pair(HELD_OUT_SEED, 1024, fine_spacing_mm=0.8)
    lq, hq = pair_window(lq, hq, 256)
    pred = _one_thread(lambda: enh.enhance(lq, scale=2, seed=0, tile=None))  # its defaults (ddim, 10 steps)
    bic = bicubic_upsample(lq, hq.shape)
    assert pred.shape == hq.shape and np.isfinite(pred).all()
    inner = np.s_[8:-8, 8:-8]
    p_pred, p_bic = psnr(pred[inner], hq[inner]), psnr(bic[inner], hq[inner])
    print(f"held-out phantom window: DDPM-HQ {p_pred:.2f} dB / SSIM {ssim(pred[inner], hq[inner]):.4f}, "
          f"bicubic {p_bic:.2f} dB / {ssim(bic[inner], hq[inner]):.4f}")
    assert p_pred > p_bic


@pytest.mark.parametrize("weights", ["default", "phantom"])
def test_shipped_model_keeps_an_inserted_nodule(weights):
    """The reason for the toolkit: a subtle nodule in the DRR must survive enhancement. The same window is enhanced
    with and without a 8 mm solid nodule (same noise seed); the difference image must still be the nodule: where it
    was, with the same contrast as in the (bicubic-upsampled) input."""
    from dxr_core.drr import Physics, make_geometry, render_drr
    from dxr_core.nodules import Nodule, add_nodules_to_drr, random_nodules
    from dxr_core.phantom import make_chest_phantom

    ct = make_chest_phantom(seed=5)
    drr = render_drr(ct, make_geometry(ct, "pa", size=(512, 512)), Physics(mode="poly", kvp=120.0))
    place = random_nodules(ct, 1, seed=3, kinds=["solid"], shapes=["sphere"], diameter_range=(8.0, 8.0))[0]
    with_nod, _, labels = add_nodules_to_drr(drr, ct, [Nodule(kind="solid", diameter_mm=8.0,
                                                              center_lps=place.center_lps)])
    col, row = labels[0]["centre_px"]
    r0 = int(np.clip(round(row) - 32, 0, 512 - 64))
    c0 = int(np.clip(round(col) - 32, 0, 512 - 64))
    win = np.s_[r0:r0 + 64, c0:c0 + 64]
    enh = load_enhancer(None if weights == "default" else PHANTOM_WEIGHTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = enh.enhance(drr.image[win], scale=2, seed=7, tile=None)
        b = enh.enhance(with_nod.image[win], scale=2, seed=7, tile=None)
    finally:
        torch.set_num_threads(threads)

    # the nodule as the input shows it, on the output grid (the model's own conditioning image)
    ref = bicubic_upsample(with_nod.image[win], (128, 128)) - bicubic_upsample(drr.image[win], (128, 128))
    got = b - a
    inner = np.s_[8:-8, 8:-8]
    corr = np.corrcoef(ref[inner].ravel(), got[inner].ravel())[0, 1]
    peak_ref, peak_got = np.abs(ref).max(), np.abs(got[inner]).max()
    print(f"nodule through DDPM-HQ: correlation {corr:.3f}, peak contrast {peak_got:.4f} vs input {peak_ref:.4f}")
    assert peak_ref > 0.01  # a visible nodule was inserted
    assert corr > 0.9
    assert 0.8 < peak_got / peak_ref < 1.25
