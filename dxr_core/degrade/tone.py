"""Tone of a domain: the grey-level quantile functions of its images, and quantile mapping onto one of them.

A DRR and a radiograph of the same chest differ in *tone* (the grey level given to lung, mediastinum and bone:
the processing curve, the kVp, the scatter) as much as in fine structure. DDPM-LQ's stage 2 keeps the coarse
content of its input, grey levels included, so it carries the tone of the LQ domain separately: the quantile
functions of the training DRRs (``tone_quantiles``, stored in the model's metadata), and at use one of them drawn
with the seed is imposed on the input by quantile (histogram) mapping (``match_tone``) before the content is
taken. Drawing one DRR's tone, not an average, keeps the spread of tones the domain has.

Quantiles are taken in the central ``crop`` of the image (the part both a radiograph and a DRR frame on the
chest). Written here because scikit-image's ``exposure.match_histograms`` needs a reference *image*; a model
stores only the quantile functions (65 numbers per DRR), and the mapping is the same piecewise-linear one.
"""
from __future__ import annotations

import numpy as np

from dxr_core.errors import InputError
from dxr_core.metrics.domain import central_crop

__all__ = ["TONE_LEVELS", "tone_quantiles", "match_tone"]

TONE_LEVELS = np.linspace(0.0, 1.0, 65)  # probability levels of the stored quantile function


def tone_quantiles(image, crop: float = 0.8) -> np.ndarray:
    """The image's grey-level quantiles at :data:`TONE_LEVELS` in its central ``crop``: float32 (65,), in [0, 1]."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise InputError(f"Tone needs a finite 2-D image, got shape {img.shape}.")
    return np.quantile(central_crop(img, crop), TONE_LEVELS).astype(np.float32)


def match_tone(image, target: np.ndarray, crop: float = 0.8) -> np.ndarray:
    """``image`` with its grey levels mapped so that its central ``crop`` has the quantile function ``target``
    ((65,), non-decreasing): value -> its quantile level in the image -> the target's value at that level. Monotone,
    so the anatomy's order of brightness is kept. float32, same shape, in [0, 1]."""
    img = np.asarray(image, np.float32)
    target = np.maximum.accumulate(np.asarray(target, np.float64).ravel())
    if target.shape != TONE_LEVELS.shape:
        raise InputError(f"A tone is {TONE_LEVELS.size} quantiles, got {target.size}.")
    src = np.quantile(central_crop(img, crop), TONE_LEVELS)
    # ties in the source (flat regions, clipped ends) would make the map undefined: spread them minimally
    src = src + np.arange(src.size) * 1e-7
    levels = np.interp(img.ravel(), src, TONE_LEVELS)
    return np.clip(np.interp(levels, TONE_LEVELS, target), 0, 1).reshape(img.shape).astype(np.float32)
