"""Image quality metrics: PSNR, SSIM, MS-SSIM, over the full image and inside a (lung) mask.

Full-image values come from MONAI (``PSNRMetric``, ``SSIMMetric``, ``MultiScaleSSIMMetric``); the masked variants
average MONAI's SSIM / contrast-structure maps (``compute_ssim_and_cs``) over the mask pixels. Images are (H, W)
float arrays in [0, 1] (data range 1). MS-SSIM uses as many of the standard 5 scales as the image size allows
(weights renormalised), so small images still get a value.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dxr_core.errors import InputError

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL = 11


def _t(a) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    while t.ndim < 4:
        t = t[None]
    return t


def _check(pred, ref):
    if np.shape(pred) != np.shape(ref):
        raise InputError(f"prediction {np.shape(pred)} and reference {np.shape(ref)} differ in size; compare images "
                         "on the same grid (resize the prediction or pick the matching reference).")


def psnr(pred, ref, mask=None) -> float:
    _check(pred, ref)
    if mask is None:
        from monai.metrics import PSNRMetric

        return float(PSNRMetric(max_val=1.0)(_t(pred), _t(ref)).mean())
    m = np.asarray(mask, bool)
    mse = float(np.mean((np.asarray(pred, np.float64)[m] - np.asarray(ref, np.float64)[m]) ** 2))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def _scales(h: int, w: int) -> int:
    """Most scales (<= 5) whose coarsest level still holds a kernel (and that MONAI's size check accepts)."""
    n = 1
    while n < len(MS_WEIGHTS) and min(h, w) // 2 ** n >= KERNEL and min(h, w) // max(1, n) ** 2 > KERNEL - 1:
        n += 1
    return n


def ssim(pred, ref, mask=None) -> float:
    _check(pred, ref)
    if mask is None:
        from monai.metrics import SSIMMetric

        return float(SSIMMetric(spatial_dims=2, data_range=1.0, win_size=KERNEL)(_t(pred), _t(ref)).mean())
    return _masked_msssim(pred, ref, mask, scales=1)


def ms_ssim(pred, ref, mask=None) -> float:
    _check(pred, ref)
    h, w = np.shape(ref)
    n = _scales(h, w)
    if mask is None:
        from monai.metrics import MultiScaleSSIMMetric

        wts = np.array(MS_WEIGHTS[:n]) / np.sum(MS_WEIGHTS[:n])
        if n == 1:
            return ssim(pred, ref)
        return float(MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=KERNEL,
                                          weights=tuple(wts.tolist()))(_t(pred), _t(ref)).mean())
    return _masked_msssim(pred, ref, mask, scales=n)


def _masked_msssim(pred, ref, mask, scales: int) -> float:
    from monai.metrics.regression import compute_ssim_and_cs

    x, y, m = _t(pred), _t(ref), _t(np.asarray(mask, np.float32))
    wts = np.array(MS_WEIGHTS[:scales]) / np.sum(MS_WEIGHTS[:scales])
    vals = []
    r = KERNEL // 2
    last_ssim = 0.0
    for s in range(scales):
        ssim_map, cs_map = compute_ssim_and_cs(x, y, 2, [KERNEL, KERNEL], [1.5, 1.5], data_range=1.0)
        mm = m[..., r:-r, r:-r] > 0.5
        if not mm.any():
            if s == 0:
                raise InputError("the mask covers no pixels away from the image border; check the --lung-mask file.")
            vals[-1] = last_ssim  # mask vanished at this scale: stop here, finishing with SSIM at the previous one
            wts = wts[:s] / wts[:s].sum()
            break
        last_ssim = float(ssim_map[mm].mean())
        vals.append(last_ssim if s == scales - 1 else float(cs_map[mm].mean()))
        if s < scales - 1:
            x, y, m = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(m, 2)
    vals = np.clip(np.array(vals), 1e-6, None)
    return float(np.prod(vals ** wts))


def image_metrics(pred, ref, mask=None) -> dict:
    """{'psnr', 'ssim', 'ms_ssim'} and, with a mask, the same with a '_lung' suffix."""
    out = {"psnr": psnr(pred, ref), "ssim": ssim(pred, ref), "ms_ssim": ms_ssim(pred, ref)}
    if mask is not None:
        if np.shape(mask) != np.shape(ref):
            raise InputError(f"lung mask {np.shape(mask)} and reference {np.shape(ref)} differ in size; give a mask "
                             "on the reference grid.")
        if not np.asarray(mask, bool).any():
            raise InputError("the lung mask is empty; give a mask with the lung pixels set.")
        out.update(psnr_lung=psnr(pred, ref, mask), ssim_lung=ssim(pred, ref, mask),
                   ms_ssim_lung=ms_ssim(pred, ref, mask))
    return out


def evaluate_folders(pred_dir: str | os.PathLike, ref_dir: str | os.PathLike,
                     mask_dir: str | os.PathLike | None = None) -> dict:
    """Metrics for every prediction with a same-named reference (and mask). Returns {'images': [...], 'mean': {...}}."""
    from dxr_core.data.pairs import _stem, list_images, read_image

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise InputError(f"{d} is not a folder; give folders of images with matching names.")
    refs = {_stem(p): p for p in list_images(ref_dir)}
    masks = {}
    if mask_dir is not None:
        mask_dir = Path(mask_dir)
        if mask_dir.is_file():
            masks = {"*": mask_dir}
        elif mask_dir.is_dir():
            masks = {_stem(p): p for p in list_images(mask_dir)}
        else:
            raise InputError(f"lung mask {mask_dir} does not exist; give a mask image or a folder of masks.")
    rows = []
    for p in list_images(pred_dir):
        stem = _stem(p)
        if stem not in refs:
            continue
        pred, ref = read_image(p), read_image(refs[stem])
        mpath = masks.get(stem, masks.get("*"))
        mask = read_image(mpath) > 0.5 if mpath is not None else None
        rows.append({"name": stem, **image_metrics(pred, ref, mask)})
    if not rows:
        raise InputError(f"no image in {pred_dir} has a same-named reference in {ref_dir}; name predictions like "
                         "their references.")
    keys = [k for k in rows[0] if k != "name"]
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    return {"images": rows, "mean": mean, "count": len(rows)}


def format_table(result: dict) -> str:
    rows = result["images"]
    keys = [k for k in rows[0] if k != "name"]
    w = max(8, max(len(r["name"]) for r in rows))
    lines = [f"{'image':<{w}} " + " ".join(f"{k:>12}" for k in keys)]
    for r in rows:
        lines.append(f"{r['name']:<{w}} " + " ".join(f"{r[k]:>12.4f}" for k in keys))
    lines.append(f"{'mean':<{w}} " + " ".join(f"{result['mean'][k]:>12.4f}" for k in keys))
    return "\n".join(lines)
