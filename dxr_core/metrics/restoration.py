"""What an enhancement adds that the reference does not have: noise and invented structure in flat regions, and
the lung-field proxy used when no lung mask exists.

* ``flat_mask(ref)``: the ``fraction`` (25 %) of pixels with the lowest local standard deviation of the reference
  (9 px window): soft tissue, mediastinum, where a restored image should stay smooth.
* ``noise``: standard deviation of the high-pass (image minus its gaussian blur, sigma 2 px) of the output inside
  the flat regions, as a ratio to the reference's own (1.0 = adds no noise).
* ``invented``: mean squared high-pass of (output - reference) inside the flat regions: structure present in the
  output but absent from the reference (compare with bicubic's).
* ``noise_sigma(img)``: the standard deviation of the image's white noise, from the median absolute diagonal (HH)
  Haar wavelet coefficient of non-overlapping 2x2 blocks / 0.6745 (Donoho's robust estimate; written here because
  ``skimage.restoration.estimate_sigma`` needs PyWavelets, which the stack does not carry).
* ``headroom_db(bicubic, ref)``: the most any 2x restorer could gain over ``bicubic`` in PSNR if the reference's white
  noise were the only unpredictable part: the 3/4 of it that 2x2 averaging removes sets a floor on the squared error.
  An upper bound, not an estimate (texture beyond the LQ's band is not predictable either).
* ``lung_proxy_mask(ref)``: the dark pixels (< 30th percentile) of the central 80 % of the reference, the lung
  fields of a chest radiograph (the same rule as the regional histograms of :mod:`dxr_core.metrics.domain`).

Written here because no library measures hallucination this way; PSNR / SSIM / MS-SSIM come from
:mod:`dxr_core.metrics.image`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["flat_mask", "headroom_db", "highpass", "lung_proxy_mask", "noise_sigma", "restoration_measures"]


def flat_mask(ref: np.ndarray, fraction: float = 0.25, size: int = 9) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    ref = np.asarray(ref, np.float64)
    m = uniform_filter(ref, size)
    sd = np.sqrt(np.maximum(uniform_filter(ref * ref, size) - m * m, 0))
    return sd <= np.quantile(sd, fraction)


def highpass(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    img = np.asarray(img, np.float64)
    return img - gaussian_filter(img, sigma)


def noise_sigma(img: np.ndarray) -> float:
    """White-noise standard deviation of a (H, W) image in its own units (robust to edges: a median)."""
    img = np.asarray(img, np.float64)
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    if h < 2 or w < 2:
        raise ValueError(f"noise_sigma needs an image of at least 2x2 pixels, got {img.shape}")
    b = img[:h, :w]
    hh = (b[0::2, 0::2] - b[0::2, 1::2] - b[1::2, 0::2] + b[1::2, 1::2]) / 2  # orthonormal Haar HH
    return float(np.median(np.abs(hh)) / 0.6745)


def headroom_db(bicubic: np.ndarray, ref: np.ndarray) -> float:
    """Upper bound (dB) on a 2x restorer's PSNR gain over ``bicubic`` given ``ref``'s white noise (inf: no noise)."""
    bicubic, ref = np.asarray(bicubic, np.float64), np.asarray(ref, np.float64)
    mse = float(np.mean((bicubic - ref) ** 2))
    floor = 0.75 * noise_sigma(ref) ** 2
    if floor <= 0:
        return float("inf")
    return float(10 * np.log10(max(mse, floor) / floor))


def lung_proxy_mask(ref: np.ndarray, crop: float = 0.8, quantile: float = 30.0) -> np.ndarray:
    ref = np.asarray(ref)
    h, w = ref.shape
    ch, cw = int(round(h * crop)), int(round(w * crop))
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    centre = np.zeros_like(ref, bool)
    centre[r0:r0 + ch, c0:c0 + cw] = True
    return centre & (ref < np.percentile(ref[centre], quantile))


def restoration_measures(out: np.ndarray, ref: np.ndarray, lungs: np.ndarray | None = None,
                         flat: np.ndarray | None = None) -> dict:
    """PSNR / SSIM / MS-SSIM (data range 1; with ``lungs`` also inside it, ``*_lung``), ``noise`` and ``invented``
    (in ``flat``, default :func:`flat_mask` of ``ref``)."""
    from dxr_core.metrics.image import image_metrics

    out, ref = np.asarray(out, np.float32), np.asarray(ref, np.float32)
    flat = flat_mask(ref) if flat is None else flat
    res = image_metrics(out, ref, lungs)
    hp_ref = highpass(ref)[flat].std()
    res["noise"] = float(highpass(out)[flat].std() / max(hp_ref, 1e-8))
    res["invented"] = float(np.mean(highpass(out - ref)[flat] ** 2))
    return res
