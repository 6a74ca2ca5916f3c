"""Plain downsampling: ``bicubic`` (antialiased, like MATLAB/PIL imresize) and ``area`` (pixel box average).

Both are deterministic (the seed is unused) and are the classic super-resolution degradations: bicubic is the
usual "bicubic LR" of SR benchmarks, area is the exact average over each LQ pixel's footprint (a detector with
larger pixels, no blur beyond the pixel).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_torch(image: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """``torch.nn.functional.interpolate`` on a 2-D float image; bicubic/bilinear are antialiased when shrinking."""
    if tuple(image.shape) == tuple(shape):
        return image.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    kw: dict = {}
    if mode in ("bicubic", "bilinear"):
        kw = {"align_corners": False, "antialias": shape[0] < image.shape[0] or shape[1] < image.shape[1]}
    if mode == "area" and (shape[0] > image.shape[0] or shape[1] > image.shape[1]):
        mode = "bilinear"  # area is for shrinking; enlarging falls back to bilinear
        kw = {"align_corners": False}
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, **kw)
    return out[0, 0].numpy()


def bicubic(image: np.ndarray, out_shape, rng):
    """Antialiased bicubic downsampling (``torch.nn.functional.interpolate``, ``antialias=True``)."""
    return resize_torch(image, out_shape, "bicubic")


def area(image: np.ndarray, out_shape, rng):
    """Area (box) averaging over each LQ pixel's footprint (``torch.nn.functional.interpolate``, ``mode='area'``)."""
    return resize_torch(image, out_shape, "area")
