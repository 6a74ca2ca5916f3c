"""The shipped DDPM-HQ weights: small, documented, loadable, and better than bicubic on held-out synthetic pairs."""
from __future__ import annotations

import numpy as np
import torch

from dxr_core.data import make_pair
from dxr_core.diffusion import DEFAULT_WEIGHTS, load_enhancer
from dxr_core.metrics import psnr


def test_shipped_weights_small_documented_and_useful():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 20e6
    card = DEFAULT_WEIGHTS.with_suffix(".md").read_text()
    for word in ("dxr train ddpm-hq", "write_pairs", "iterations", "PSNR", "SSIM"):
        assert word in card
    enh = load_enhancer()
    assert enh.meta["iteration"] > 0 and enh.diffusion.prediction in ("v", "eps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lq, hq = make_pair(256, 2, seed=777_001)  # the size the shipped model was trained at
        pred = enh.enhance(lq, scale=2, sampler="dpmpp", steps=10, seed=0, tile=None)
    finally:
        torch.set_num_threads(threads)
    bic = torch.nn.functional.interpolate(torch.from_numpy(lq)[None, None], size=hq.shape, mode="bicubic",
                                          align_corners=False)[0, 0].clamp(0, 1).numpy()
    assert pred.shape == hq.shape and np.isfinite(pred).all()
    assert psnr(pred, hq) > psnr(bic, hq)
