"""The shipped DDPM-HQ weights: small, documented, loadable, and better than bicubic on a held-out phantom DRR pair
(the data it was fine-tuned on: coarse clinical-CT DRR -> fine phantom DRR, see its model card)."""
from __future__ import annotations

import numpy as np
import torch

from dxr_core.data import pair_window
from dxr_core.diffusion import DEFAULT_WEIGHTS, load_enhancer, upsample_condition
from dxr_core.metrics import psnr, ssim
from dxr_core.phantom import drr_pair

HELD_OUT_SEED = 777_001  # training used seeds 1_100_000 .. 1_100_039


def test_shipped_weights_small_documented_and_useful():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 20e6
    card = DEFAULT_WEIGHTS.with_suffix(".md").read_text()
    for word in ("dxr train ddpm-hq", "pairs_from_phantom", "--init", "iterations", "PSNR", "SSIM"):
        assert word in card
    enh = load_enhancer()
    assert enh.meta["iteration"] > 0 and enh.diffusion.prediction in ("v", "eps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # the scale the model serves: a 512 DRR of the whole chest -> 1024 (one lung window, to stay cheap)
        lq, hq = drr_pair(HELD_OUT_SEED, 1024, fine_spacing_mm=0.8)
        lq, hq = pair_window(lq, hq, 256)
        pred = enh.enhance(lq, scale=2, seed=0, tile=None)  # default sampler and steps
    finally:
        torch.set_num_threads(threads)
    bic = ((upsample_condition(torch.from_numpy(lq)[None, None] * 2 - 1, hq.shape) + 1) / 2)[0, 0].clamp(0, 1).numpy()
    assert pred.shape == hq.shape and np.isfinite(pred).all()
    inner = np.s_[8:-8, 8:-8]  # both upsamplers see the same window edge; compare away from it
    p_pred, p_bic = psnr(pred[inner], hq[inner]), psnr(bic[inner], hq[inner])
    print(f"held-out phantom window: DDPM-HQ {p_pred:.2f} dB / SSIM {ssim(pred[inner], hq[inner]):.4f}, "
          f"bicubic {p_bic:.2f} dB / {ssim(bic[inner], hq[inner]):.4f}")
    assert p_pred > p_bic
