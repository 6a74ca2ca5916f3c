"""Detectability index d' of a non-prewhitening (NPW) matched-filter model observer.

For a known signal ``s`` (the nodule's expected, noise-free change of the image) in stationary Gaussian noise of
noise power spectrum NPS(f), the NPW observer correlates the image with the signal itself as template
(t = s^T g) and its detectability index is (ICRU Report 54, "Medical imaging - the assessment of image quality",
1996, sec. 2-3; Wagner & Brown, Phys Med Biol 30:489, 1985; Burgess, JOSA A 11:1237, 1994)

    d'^2 = [ sum_f |S(f)|^2 ]^2 / ( N sum_f |S(f)|^2 NPS(f) ),

with S the discrete Fourier transform of s on an N-pixel region and NPS normalised so that a white noise of
per-pixel variance sigma^2 has NPS = sigma^2 (then d' = ||s|| / sigma). The template is the signal, so the measure is
matched to the nodule's size and profile by construction.

:func:`background_nps` estimates the NPS of a region of the image without the nodule (anatomical background):
a quadratic trend is removed (the slow lung-to-mediastinum gradient is not noise for a local task), the region is
tapered by a 2-D Hann window and its periodogram is normalised by the window energy (Bendat & Piersol; the usual
single-realisation NPS estimate of anatomical noise, e.g. Burgess et al., Med Phys 28:419, 2001). Quantum noise
adds a white term sigma_q^2.
"""
from __future__ import annotations

import numpy as np


def _detrend(b: np.ndarray) -> np.ndarray:
    h, w = b.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y = (y - y.mean()) / max(h, 1)
    x = (x - x.mean()) / max(w, 1)
    A = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(A, b.reshape(-1), rcond=None)
    return b - (A @ coef).reshape(h, w)


def background_nps(background: np.ndarray, detrend: bool = True) -> np.ndarray:
    """NPS (per-pixel variance units, same shape as ``background``, unshifted FFT order) of one background region:
    detrended, Hann-windowed periodogram divided by the mean squared window."""
    b = np.asarray(background, dtype=np.float64)
    b = _detrend(b) if detrend else b - b.mean()
    w = np.outer(np.hanning(b.shape[0] + 2)[1:-1], np.hanning(b.shape[1] + 2)[1:-1])
    F = np.fft.fft2(b * w)
    return (np.abs(F) ** 2) / float((w * w).sum())


def npw_dprime(signal: np.ndarray, nps: np.ndarray | None = None, sigma_white: float = 0.0) -> float:
    """d' of the NPW observer for ``signal`` (2-D, the expected change) in noise of ``nps`` (same shape, FFT order,
    per-pixel variance units) plus white noise of standard deviation ``sigma_white``."""
    s = np.asarray(signal, dtype=np.float64)
    S2 = np.abs(np.fft.fft2(s)) ** 2
    P = np.zeros_like(S2) if nps is None else np.asarray(nps, dtype=np.float64)
    P = P + float(sigma_white) ** 2
    num = float(S2.sum())
    den = float(s.size * (S2 * P).sum())
    if num <= 0.0:
        return 0.0
    if den <= 0.0:
        return float("inf")
    return num / np.sqrt(den)
