"""Nodule labels of one DRR -> the same labels on the enhanced (resampled) pixel grid of the same detector.

Coordinates (as written by ``dxr_core.nodules``): ``centre_px`` is (col, row) with pixel centres at integers;
``bbox`` is COCO [x, y, w, h] in pixel-edge units (pixel c covers [c, c+1)); ``segmentation`` is a COCO
uncompressed RLE of the whole image. Resampling a grid by s (same field of view) maps a centre coordinate u to
s*u + (s-1)/2 and an edge coordinate e to s*e; masks are resampled nearest-neighbour. Measured values
(visibility, contrast, noise) belong to the DRR they were measured on and are kept as they are.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def scale_matrix(sy: float, sx: float) -> np.ndarray:
    """3x3 map of pixel-centre coordinates (col, row, 1) of an image onto the same field of view resampled by
    (sy rows, sx cols) per pixel: c' = sx * c + (sx - 1) / 2 (pixel centres at integers). Left-multiplying a 3x4
    projection matrix by it gives the projection matrix of the resampled grid."""
    return np.array([[sx, 0.0, (sx - 1.0) / 2.0], [0.0, sy, (sy - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def _resample_mask(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    h, w = mask.shape
    r = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    c = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return mask[np.ix_(r, c)]


def rescale_labels(labels, sy: float, sx: float) -> list:
    """Every label of a DRR on the grid resampled by (sy, sx) (see :func:`rescale_label`)."""
    return [rescale_label(lab, sy, sx) for lab in labels]


def rescale_label(label: Any, sy: float, sx: float) -> Any:
    if not isinstance(label, dict):
        return label
    out = dict(label)
    if "centre_px" in out and out["centre_px"] is not None:
        c, r = (float(v) for v in out["centre_px"])
        out["centre_px"] = [sx * c + (sx - 1.0) / 2.0, sy * r + (sy - 1.0) / 2.0]
    seg = out.get("segmentation")
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        from dxr_core.nodules import rle_decode, rle_encode

        h, w = seg["size"]
        mask = _resample_mask(rle_decode(seg), int(round(h * sy)), int(round(w * sx)))
        out["segmentation"] = rle_encode(mask)
        out["area"] = int(mask.sum())
        ys, xs = np.nonzero(mask)
        if len(ys):
            out["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        else:
            out["bbox"] = [0, 0, 0, 0]
    elif out.get("bbox") is not None:
        x, y, w, h = (float(v) for v in out["bbox"])
        out["bbox"] = [x * sx, y * sy, w * sx, h * sy]
    return out


def rescale_projection(P, sy: float, sx: float) -> list:
    """The 3x4 projection matrix of the grid resampled by (sy, sx): ``scale_matrix @ P``."""
    return (scale_matrix(sy, sx) @ np.asarray(P, dtype=np.float64)).tolist()


def rescale_sidecar(side: dict, shape: tuple[int, int], sy: float, sx: float) -> dict:
    """A DRR's JSON sidecar for its resampled (enhanced) image of ``shape`` (rows, cols): projection matrix,
    detector size and pixel spacing follow the new grid; the low-resolution values are kept under ``lq``."""
    out = dict(side)
    geo = dict(side.get("geometry") or {})
    lq = {k: geo.get(k) for k in ("size", "pixel_spacing_mm", "projection_matrix") if k in geo}
    if geo.get("projection_matrix") is not None:
        geo["projection_matrix"] = rescale_projection(geo["projection_matrix"], sy, sx)
    if geo.get("pixel_spacing_mm") is not None:
        geo["pixel_spacing_mm"] = [float(geo["pixel_spacing_mm"][0]) / sy, float(geo["pixel_spacing_mm"][1]) / sx]
    geo["size"] = [int(shape[0]), int(shape[1])]
    out["geometry"] = geo
    if side.get("projection_matrix") is not None:
        out["projection_matrix"] = rescale_projection(side["projection_matrix"], sy, sx)
    out["lq"] = lq
    return out


def rescale_coco(coco: dict, shape: tuple[int, int], sy: float, sx: float, file_name: str | None = None) -> dict:
    """A COCO file of one DRR for its resampled image: annotations via :func:`rescale_label`, image size and
    projection matrix of the new grid."""
    out = dict(coco)
    out["images"] = []
    for im in coco.get("images", []):
        im = dict(im, width=int(shape[1]), height=int(shape[0]))
        if im.get("projection_matrix") is not None:
            im["projection_matrix"] = rescale_projection(im["projection_matrix"], sy, sx)
        if file_name:
            im["file_name"] = file_name
        out["images"].append(im)
    out["annotations"] = rescale_labels(coco.get("annotations", []), sy, sx)
    return out
