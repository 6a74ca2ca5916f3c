"""dxr_core.phantom.drr_pair: aligned fine/coarse DRR pairs of the phantom, and the data hook that writes them.

Small detectors (64 px, ~4 s a pair on a busy CPU); pairs are computed once per seed and shared (cached_pair).
"""
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dxr_core.errors import OptionError
from dxr_core.phantom import CTEffects, drr_pair

SIZE = 64


@functools.lru_cache(maxsize=None)
def cached_pair(seed: int):
    return drr_pair(seed, SIZE, return_info=True)


@pytest.fixture(scope="module")
def pair():
    return cached_pair(0)


def _hf_energy(a: np.ndarray) -> float:
    """Spectral energy above a quarter of the sampling frequency (radius > n/4 of the centred spectrum)."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(a - a.mean()))) ** 2
    n = a.shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return float(f[np.hypot(yy, xx) > n / 4].sum())


def test_shapes_ranges_and_info(pair):
    lq, hq, info = pair
    assert lq.shape == (SIZE // 2, SIZE // 2) and hq.shape == (SIZE, SIZE)
    assert lq.dtype == np.float32 and hq.dtype == np.float32
    for im in (lq, hq):
        assert np.isfinite(im).all() and im.min() >= 0.0 and im.max() <= 1.0
        assert im.max() > 0.3 and im.std() > 0.05  # a real chest image, not blank
    # same detector plane and field of view, half the pixels
    gh, gl = info["geometry_hq"], info["geometry_lq"]
    assert gl["size"] == [SIZE // 2, SIZE // 2] and gh["size"] == [SIZE, SIZE]
    assert np.allclose(gl["pixel_spacing_mm"], 2 * np.asarray(gh["pixel_spacing_mm"]))
    assert np.allclose(gl["source_lps"], gh["source_lps"])
    assert info["physics_hq"]["window"] == info["physics_lq"]["window"]
    assert info["physics_hq"]["kvp"] == info["physics_lq"]["kvp"] == 120.0
    # the coarse CT is never finer than the fine one, and thick-sliced
    assert all(c >= f for c, f in zip(info["coarse_spacing_mm"], info["fine_spacing_mm"]))
    assert info["coarse_spacing_mm"][2] >= 2.5


def test_deterministic_for_a_seed(pair):
    lq, hq, _ = pair
    lq2, hq2 = drr_pair(0, SIZE)  # recomputed, not cached
    assert np.array_equal(lq, lq2) and np.array_equal(hq, hq2)
    lq3, hq3, _ = cached_pair(1)
    assert not np.allclose(hq, hq3, atol=1e-3)


def test_aligned_and_hq_has_more_detail(pair):
    lq, hq, _ = pair
    t = torch.from_numpy(hq)[None, None]
    down = F.interpolate(t, scale_factor=0.5, mode="area")[0, 0].numpy()
    assert np.corrcoef(down.ravel(), lq.ravel())[0, 1] > 0.95
    # a one-pixel shift of the LQ must be worse than no shift (the pair is registered, not just similar)
    shifted = np.roll(lq, 1, axis=1)
    assert np.abs(down - lq).mean() < np.abs(down - shifted).mean()
    up = F.interpolate(torch.from_numpy(lq)[None, None], size=hq.shape, mode="bicubic",
                       align_corners=False)[0, 0].numpy()
    assert _hf_energy(hq) > 1.5 * _hf_energy(up)


def test_lq_noise_is_seeded_and_lq_only(pair):
    clean_lq, clean_hq, _ = pair  # default effects: 3 mm slices, standard kernel, no noise
    fx = CTEffects(slice_thickness_mm=3.0, kernel="standard", dose_mAs=20.0)
    a = drr_pair(0, SIZE, ct_effects=fx, lq_photons=2e4)
    b = drr_pair(0, SIZE, ct_effects=fx, lq_photons=2e4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[1], clean_hq)  # HQ is the noise-free ground truth
    assert not np.allclose(a[0], clean_lq, atol=1e-4)
    assert np.corrcoef(a[0].ravel(), clean_lq.ravel())[0, 1] > 0.95  # noisy, still the same anatomy


def test_bad_size_is_one_sentence():
    with pytest.raises(OptionError, match="even"):
        drr_pair(0, 63)


def test_pairs_from_phantom_writes_loadable_aligned_pairs(tmp_path):
    from dxr_core.data import find_pairs, load_pairs, pairs_from_phantom

    out = pairs_from_phantom(tmp_path / "pairs", n=2, size=SIZE, seed=0)
    files = find_pairs(out)
    assert [(lq.name, hq.name) for lq, hq in files] == [("0000.png", "0000.png"), ("0001.png", "0001.png")]
    pairs = load_pairs(out)
    assert len(pairs) == 2
    for i, p in enumerate(pairs):
        assert p.lq.shape == (1, SIZE // 2, SIZE // 2) and p.hq.shape == p.cond.shape == (1, SIZE, SIZE)
        assert p.hq.min() >= -1 and p.hq.max() <= 1
        # the files hold exactly drr_pair(seed * 100_000 + i, size) (16-bit PNG quantisation)
        lq, hq, _ = cached_pair(i)
        assert np.abs((p.hq[0].numpy() + 1) / 2 - hq).max() < 1e-4
        assert np.abs((p.lq[0].numpy() + 1) / 2 - lq).max() < 1e-4
        # cond (LQ bicubic on the HQ grid) is aligned with the HQ
        assert np.corrcoef(p.cond[0].numpy().ravel(), p.hq[0].numpy().ravel())[0, 1] > 0.95
    # resumable: a rerun makes only the missing pair; pair options reach drr_pair
    (out / "hq" / "0001.png").unlink()
    made = []

    def make(seed, size):
        made.append(seed)
        return drr_pair(seed, size)

    pairs_from_phantom(out, n=2, size=SIZE, seed=0, make_fn=make, progress=False)
    assert made == [1] and (out / "hq" / "0001.png").is_file()
    with pytest.raises(TypeError, match="fine_spacing_mm"):
        pairs_from_phantom(out, n=2, size=SIZE, make_fn=make, fine_spacing_mm=2.0)


def test_pair_window_is_aligned():
    from dxr_core.data import pair_window

    lq, hq, _ = cached_pair(0)
    lw, hw = pair_window(lq, hq, 32)
    assert lw.shape == (16, 16) and hw.shape == (32, 32)
    # each LQ pixel covers a 2x2 block of the HQ window: block means track the LQ window
    blocks = hw.reshape(16, 2, 16, 2).mean((1, 3))
    assert np.corrcoef(blocks.ravel(), lw.ravel())[0, 1] > 0.9
    lw2, hw2 = pair_window(lq, hq, 10_000)  # larger than the image: clamped to the whole image
    assert lw2.shape == lq.shape and hw2.shape == hq.shape
