"""Synthetic paired LQ/HQ radiograph-like images, made by our own code (tests, training of the shipped weights).

HQ: smooth low-frequency "soft tissue" field, a bright mediastinum-like band, rib-like curved bands with sharp
edges, thin branching vessel-like lines, a few round nodule-like blobs and a low-amplitude fine texture, in [0, 1].
LQ: the HQ blurred (gaussian, sigma ~ 1.0-1.5 HQ pixels, like a DRR's finite voxel/slice) and downsampled x``scale``
with antialiased bicubic, plus mild noise. Much of the loss (edge sharpness) is recoverable, the finest texture is
not: a good model beats bicubic upsampling in PSNR while a generative model may hallucinate the texture.

Phantom hook: :func:`pairs_from_phantom` turns fine/coarse DRR pairs from ``dxr_core.phantom`` (when installed)
into the same folder layout.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def _smooth_field(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Gaussian random field with a gaussian spectrum (correlation length ~ size*cutoff)."""
    f = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    spec = np.exp(-(fx ** 2 + fy ** 2) / (2 * cutoff ** 2))
    noise = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    field = np.real(np.fft.ifft2(noise * spec))
    return (field / (field.std() + 1e-8)).astype(np.float32)


def make_hq(size: int = 128, seed: int = 0) -> np.ndarray:
    """One HQ image (size, size) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    img = 0.35 + 0.08 * _smooth_field(rng, size, 1.5 / size * 4)
    # mediastinum-like bright vertical band with soft edges
    cx = rng.uniform(-0.15, 0.15)
    img += 0.18 * np.exp(-((xx - cx) / rng.uniform(0.12, 0.22)) ** 4)
    # rib-like arcs: sharp-edged bright curved bands
    for _ in range(rng.integers(3, 7)):
        c = (rng.uniform(-1.2, 1.2), rng.uniform(-2.0, -0.6))
        r = rng.uniform(1.0, 2.0)
        w = rng.uniform(0.03, 0.07)
        d = np.abs(np.hypot(xx - c[0], yy - c[1]) - r)
        img += rng.uniform(0.08, 0.16) * (d < w)
    # vessel-like thin lines (random walks), 1-2 px wide
    vessels = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(4, 9)):
        p = rng.uniform(0.2, 0.8, 2) * size
        ang = rng.uniform(0, 2 * np.pi)
        width = rng.uniform(1.0, 2.0)
        for _ in range(int(size * rng.uniform(0.3, 0.7))):
            ang += rng.normal(0, 0.15)
            p = p + np.array([np.sin(ang), np.cos(ang)])
            if not (0 <= p[0] < size and 0 <= p[1] < size):
                break
            y0, x0 = int(p[0]), int(p[1])
            ys, xs = slice(max(0, y0 - 2), min(size, y0 + 3)), slice(max(0, x0 - 2), min(size, x0 + 3))
            gy, gx = np.mgrid[ys, xs]
            vessels[ys, xs] = np.maximum(vessels[ys, xs], np.exp(-((gy - p[0]) ** 2 + (gx - p[1]) ** 2) / width ** 2))
    img += rng.uniform(0.08, 0.15) * vessels
    # nodule-like blobs with sharp-ish rims
    for _ in range(rng.integers(1, 4)):
        c = rng.uniform(-0.7, 0.7, 2)
        r = rng.uniform(0.03, 0.08)
        d = np.hypot(xx - c[0], yy - c[1]) / r
        img += rng.uniform(0.06, 0.12) / (1 + np.exp(np.minimum((d - 1) * 12, 50)))
    # fine texture (partly unrecoverable from LQ)
    img += 0.005 * _smooth_field(rng, size, 0.25)
    return np.clip(img, 0, 1).astype(np.float32)


def degrade(hq: np.ndarray, scale: int = 2, blur_sigma: float = 1.0, noise: float = 0.002,
            seed: int = 0) -> np.ndarray:
    """HQ (H, W) -> LQ (H/scale, W/scale): gaussian blur, antialiased bicubic downsampling, mild noise."""
    t = torch.from_numpy(np.asarray(hq, np.float32))[None, None]
    if blur_sigma > 0:
        r = int(math.ceil(3 * blur_sigma))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * blur_sigma ** 2))
        k = k / k.sum()
        t = F.pad(t, (r, r, r, r), mode="reflect")
        t = F.conv2d(F.conv2d(t, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    h, w = hq.shape
    t = F.interpolate(t, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)
    lq = t[0, 0].numpy()
    if noise > 0:
        lq = lq + np.random.default_rng(seed + 1_000_003).normal(0, noise, lq.shape).astype(np.float32)
    return np.clip(lq, 0, 1).astype(np.float32)


def make_pair(size: int = 128, scale: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) pair; hq is (size, size), lq is (size/scale, size/scale)."""
    rng = np.random.default_rng(seed + 17)
    hq = make_hq(size, seed)
    return degrade(hq, scale, blur_sigma=float(rng.uniform(1.0, 1.5)), seed=seed), hq


def write_pairs(out_dir: str | os.PathLike, n: int = 32, size: int = 128, scale: int = 2, seed: int = 0,
                fmt: str = "png") -> Path:
    """Write ``n`` pairs as ``out_dir/lq/NNNN.png`` and ``out_dir/hq/NNNN.png`` (16-bit PNG); returns out_dir."""
    from dxr_core.data.pairs import write_image

    out = Path(out_dir)
    for i in range(n):
        lq, hq = make_pair(size, scale, seed * 100_000 + i)
        write_image(lq, out / "lq" / f"{i:04d}.{fmt}")
        write_image(hq, out / "hq" / f"{i:04d}.{fmt}")
    return out


def pairs_from_phantom(out_dir: str | os.PathLike, n: int = 8, size: int = 256, seed: int = 0,
                       make_fn: Callable[[int, int], tuple[np.ndarray, np.ndarray]] | None = None,
                       progress: bool = True, **pair_kwargs) -> Path:
    """Write ``n`` fine/coarse DRR pairs of the procedural phantom as ``out_dir/{lq,hq}/NNNN.png``.

    ``make_fn(seed, size) -> (lq, hq)`` defaults to :func:`dxr_core.phantom.drr_pair` (``pair_kwargs`` go to it,
    e.g. ``fine_spacing_mm=0.8``); any callable with that contract works, so pairs from other sources plug in the
    same way. Pair ``i`` uses seed ``seed * 100000 + i``. Resumable: a pair whose two files exist is skipped (each
    file is written atomically), so an interrupted run continues where it stopped. Shows a tqdm progress bar.
    """
    from functools import partial

    from tqdm.auto import tqdm

    from dxr_core.data.pairs import write_image
    from dxr_core.errors import ModelError

    if make_fn is None:
        try:
            from dxr_core.phantom import drr_pair
        except ImportError:
            raise ModelError("dxr_core.phantom provides no drr_pair(seed, size) yet; pass make_fn or use "
                             "write_pairs() for synthetic pairs.") from None
        make_fn = partial(drr_pair, **pair_kwargs)
    elif pair_kwargs:
        raise TypeError(f"pair options {sorted(pair_kwargs)} only apply to the default phantom make_fn")
    out = Path(out_dir)
    for i in tqdm(range(n), desc="phantom pairs", unit="pair", disable=not progress):
        lq_path, hq_path = out / "lq" / f"{i:04d}.png", out / "hq" / f"{i:04d}.png"
        if lq_path.is_file() and hq_path.is_file():
            continue
        lq, hq = make_fn(seed * 100_000 + i, size)
        write_image(lq, lq_path)
        write_image(hq, hq_path)
    return out
