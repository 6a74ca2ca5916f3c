"""``high_order``: a random, seeded, second-order degradation chain after Real-ESRGAN.

Reference: X. Wang, L. Xie, C. Dong, Y. Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data", ICCV Workshops 2021 (arXiv:2107.10833). The chain is applied twice ("high-order"):

    stage 1: blur -> random resize -> noise -> JPEG
    stage 2: blur (with probability ``second_blur_prob``) -> random resize -> noise -> JPEG
    final:   resize to the LQ shape, JPEG before or after it (random order)

- blur: a gaussian kernel, isotropic or anisotropic (random sigmas along two axes and a random rotation; the
  bivariate gaussian of the paper), odd size in ``kernel_size``; applied with ``torch.nn.functional.conv2d`` and
  reflect padding.
- resize: up (p 0.2), down (p 0.7) or keep (p 0.1) by a factor from ``resize_range`` / ``resize_range2``, mode drawn
  from area / bilinear / bicubic (``torch.nn.functional.interpolate``); in stage 2 relative to the LQ size.
- noise: gaussian (sigma from ``noise_sigma`` in [0, 1] units) or, with probability ``poisson_prob``, Poisson
  (shot) noise ``poisson(x * v) / v`` with ``v`` the next power of two of the number of grey levels, its deviation
  from ``x`` scaled by a factor from ``poisson_scale``, as in the paper. Grey images, so always "gray noise".
- JPEG: PIL's libjpeg at a quality from ``jpeg_quality`` (8-bit, like the paper's uint8 pipeline: the output is
  quantised to 1/255 steps after each JPEG step).
Left out of the paper's chain: generalized-gaussian / plateau kernels and the final 2-D sinc (ringing) filter.
Ranges are the paper's defaults; for radiographs narrower ranges may fit better (pass them as options).
Every draw comes from one ``numpy.random.Generator`` made from the seed: same seed, same chain, same output.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from dxr_core.degrade.resize import resize_torch

_MODES = ("area", "bilinear", "bicubic")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Normalised (size, size) bivariate gaussian with standard deviations along axes rotated by ``theta``."""
    r = (size - 1) / 2.0
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def _blur(img: np.ndarray, rng: np.random.Generator, sigma_range, kernel_size, aniso_prob: float, log: list):
    size = int(rng.choice(np.arange(int(kernel_size[0]) // 2, int(kernel_size[1]) // 2 + 1))) * 2 + 1
    if rng.random() < aniso_prob:
        sx, sy = (float(rng.uniform(*sigma_range)) for _ in range(2))
        theta = float(rng.uniform(-math.pi, math.pi))
        kind = "anisotropic"
    else:
        sx = sy = float(rng.uniform(*sigma_range))
        theta, kind = 0.0, "isotropic"
    k = gaussian_kernel(size, sx, sy, theta)
    pad = size // 2
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    mode = "reflect" if min(img.shape) > pad else "replicate"
    t = F.conv2d(F.pad(t, (pad, pad, pad, pad), mode=mode), torch.from_numpy(k)[None, None])
    log.append({"op": "blur", "kind": kind, "kernel_size": size, "sigma": [sx, sy], "theta": theta})
    return t[0, 0].numpy()


def _resize_random(img: np.ndarray, rng, base_shape, resize_range, log: list):
    kind = rng.choice(["up", "down", "keep"], p=[0.2, 0.7, 0.1])
    f = float(rng.uniform(1.0, resize_range[1])) if kind == "up" else (
        float(rng.uniform(resize_range[0], 1.0)) if kind == "down" else 1.0)
    mode = str(rng.choice(_MODES))
    shape = (max(2, int(round(base_shape[0] * f))), max(2, int(round(base_shape[1] * f))))
    log.append({"op": "resize", "factor": f, "mode": mode, "shape": list(shape)})
    return resize_torch(img, shape, mode)


def _noise(img: np.ndarray, rng, sigma_range, poisson_range, poisson_prob: float, log: list):
    if rng.random() < poisson_prob:
        levels = len(np.unique(np.round(np.clip(img, 0, 1) * 255)))
        v = 2.0 ** math.ceil(math.log2(max(levels, 2)))
        scale = float(rng.uniform(*poisson_range))
        noisy = rng.poisson(np.clip(img, 0, 1).astype(np.float64) * v) / v
        out = img + (noisy - img) * scale
        log.append({"op": "noise", "kind": "poisson", "levels": v, "scale": scale})
    else:
        sigma = float(rng.uniform(*sigma_range))
        out = img + rng.normal(0.0, sigma, img.shape)
        log.append({"op": "noise", "kind": "gaussian", "sigma": sigma})
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through an 8-bit JPEG at ``quality`` (PIL / libjpeg)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                              quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def _jpeg(img, rng, quality_range, log: list):
    q = int(rng.integers(int(quality_range[0]), int(quality_range[1]) + 1))
    log.append({"op": "jpeg", "quality": q})
    return jpeg(img, q)


def high_order(image: np.ndarray, out_shape, rng: np.random.Generator, *,
               blur_sigma=(0.2, 3.0), blur_sigma2=(0.2, 1.5), kernel_size=(7, 21), anisotropic_prob: float = 0.5,
               resize_range=(0.15, 1.5), resize_range2=(0.3, 1.2),
               noise_sigma=(1 / 255, 30 / 255), noise_sigma2=(1 / 255, 25 / 255),
               poisson_scale=(0.05, 3.0), poisson_scale2=(0.05, 2.5), poisson_prob: float = 0.4,
               jpeg_quality=(30, 95), jpeg_quality2=(30, 95), second_blur_prob: float = 0.8, order: int = 2):
    """Real-ESRGAN-style random degradation (see the module docstring); returns ``(lq, {"chain": [...]})``."""
    from dxr_core.errors import OptionError

    if int(order) not in (1, 2):
        raise OptionError(f"high_order order {order!r} must be 1 or 2 (number of degradation stages).")
    for name, rg in (("blur_sigma", blur_sigma), ("blur_sigma2", blur_sigma2), ("noise_sigma", noise_sigma),
                     ("noise_sigma2", noise_sigma2), ("resize_range", resize_range), ("jpeg_quality", jpeg_quality),
                     ("jpeg_quality2", jpeg_quality2), ("kernel_size", kernel_size)):
        if len(rg) != 2 or not rg[0] <= rg[1] or rg[0] < 0:
            raise OptionError(f"high_order option {name}={rg!r} must be a (low, high) pair with 0 <= low <= high.")
    log: list = []
    img = image.astype(np.float32)
    h, w = img.shape
    img = _blur(img, rng, blur_sigma, kernel_size, anisotropic_prob, log)
    img = _resize_random(img, rng, (h, w), resize_range, log)
    img = _noise(img, rng, noise_sigma, poisson_scale, poisson_prob, log)
    img = _jpeg(img, rng, jpeg_quality, log)
    if int(order) == 2:
        if rng.random() < second_blur_prob:
            img = _blur(img, rng, blur_sigma2, kernel_size, anisotropic_prob, log)
        img = _resize_random(img, rng, out_shape, resize_range2, log)
        img = _noise(img, rng, noise_sigma2, poisson_scale2, poisson_prob, log)
    jpeg_first = bool(rng.random() < 0.5)
    mode = str(rng.choice(_MODES))
    if jpeg_first:
        img = _jpeg(img, rng, jpeg_quality2, log)
    img = resize_torch(img, out_shape, mode)
    log.append({"op": "resize", "mode": mode, "shape": list(out_shape)})
    if not jpeg_first:
        img = _jpeg(img, rng, jpeg_quality2, log)
    return np.clip(img, 0.0, 1.0), {"chain": log}
