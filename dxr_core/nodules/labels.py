"""Nodules in a DRR: delta re-trace, projected labels (mask, box, centre), visibility and COCO export.

Pixel conventions
- ``centre_px`` = (col, row) from the DRR's 3x4 projection matrix, pixel centres at integers (as in the sidecar).
- ``bbox`` follows COCO: [x, y, width, height] with pixel (row r, col c) covering [c, c+1) x [r, r+1); so a
  matrix coordinate ``col`` lies in the box when ``x <= col + 0.5 <= x + width``.
- ``segmentation``: COCO uncompressed RLE ({"size": [rows, cols], "counts": [...]}, column-major, starting with
  background) of the projected mask: pixels whose central ray passes through the nodule (analytic ray casting).

Visibility (contrast-to-noise ratio) = mean over the mask of the difference of the noise-free line integrals
(mu x mm at the DRR's effective energy) with and without the nodule, in image units (divided by the width of the
DRR's log window, so 1.0 = the full grey range), divided by the local noise
sqrt(sigma_anatomy^2 + sigma_quantum^2): sigma_anatomy is the standard deviation of the high-pass (minus its
3 mm Gaussian blur) noise-free line integral of the background, in image units (divided by the window width),
in a 40 mm (at the isocentre) window around the nodule; sigma_quantum
= 1/sqrt(N T) in -ln I units scaled by the window, with N the DRR's photons per pixel (or a reference 5e4 when the
DRR is noise-free) and T the local transmission. This CNR is kept for compatibility; the visibility measure to use
is ``detectability``: the d' of a non-prewhitening matched-filter model observer (ICRU Report 54; Burgess 1994)
whose template is the nodule's own expected projected signal and whose noise power spectrum is that of the local
background (anatomical structure) plus quantum noise (:func:`detectability`, :mod:`dxr_core.nodules.observer`).

Each label also records ``location`` (intraparenchymal / juxtapleural / perifissural / unspecified) and
``overlaps`` (indices of the other labels of the same image whose bbox shares a pixel; random placement avoids
them by default, see :func:`dxr_core.nodules.models.random_nodules`).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from dxr_core.errors import InputError
from dxr_core.nodules.models import KINDS, Nodule, nodule_patch
from dxr_core.volume import Volume

REFERENCE_PHOTONS = 5e4
CATEGORY_IDS = {k: i + 1 for i, k in enumerate(KINDS)}


def _project(geometry, pts, P=None) -> np.ndarray:
    P = geometry.projection_matrix if P is None else P
    h = np.concatenate([np.asarray(pts, np.float64).reshape(-1, 3), np.ones((len(pts), 1))], axis=1) @ P.T
    return h[:, :2] / h[:, 2:3]


def projected_mask(geometry, nodule: Nodule, n_samples: int = 64, P: np.ndarray | None = None):
    """(mask bool (r1-r0, c1-c0), (r0, r1, c0, c1), chord_mm) by casting each pixel's central ray through the
    analytic nodule: exact ray/ellipsoid intersection for spheres and ellipsoids; otherwise rays through the
    inscribed sphere hit, and the rest are sampled along their chord of the bounding sphere (chord lengths of
    those shapes are approximate)."""
    rows, cols = geometry.size
    c = np.asarray(nodule.center_lps, dtype=np.float64)
    R = nodule.extent_mm
    cube = c + np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64) * R
    cr = _project(geometry, cube, P)
    c0 = max(int(np.floor(cr[:, 0].min())) - 1, 0)
    c1 = min(int(np.ceil(cr[:, 0].max())) + 2, cols)
    r0 = max(int(np.floor(cr[:, 1].min())) - 1, 0)
    r1 = min(int(np.ceil(cr[:, 1].max())) + 2, rows)
    if c0 >= c1 or r0 >= r1:
        return np.zeros((0, 0), bool), (r0, r0, c0, c0), np.zeros((0, 0))
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    pix = geometry.pixel_to_world(np.stack([cc.ravel(), rr.ravel()], -1))
    s = np.asarray(geometry.source_lps, dtype=np.float64)
    d = pix - s
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t_c = (c - s) @ d.T  # distance along the ray of the closest approach to the centre
    miss2 = np.sum((c - s) ** 2) - t_c**2
    half = np.sqrt(np.maximum(R * R - miss2, 0.0))
    hit = half > 0
    chord = np.zeros(len(d))
    mask = np.zeros(len(d), bool)
    idx = np.nonzero(hit)[0]
    if nodule.shape in ("sphere", "ellipsoid"):  # exact ray / ellipsoid intersection
        g = nodule._geo
        sc = nodule.radius_mm * g["axes"]
        o = ((s - c) @ g["rot"]) / sc
        dd = (d[idx] @ g["rot"]) / sc
        a2 = (dd * dd).sum(1)
        b = dd @ o
        disc = b * b - a2 * (o @ o - 1.0)
        ok = disc > 0
        chord[idx[ok]] = 2.0 * np.sqrt(disc[ok]) / a2[ok]
        mask[idx[ok]] = True
        shape = (r1 - r0, c1 - c0)
        return mask.reshape(shape), (r0, r1, c0, c1), chord.reshape(shape)
    # rays through the inscribed sphere (lobulated: 0.9 R, spiculated: R) surely hit: sample only the others
    r_in = nodule.radius_mm * (0.9 if nodule.shape == "lobulated" else 1.0)
    sure = np.sqrt(np.maximum(miss2[idx], 0.0)) < r_in
    mask[idx[sure]] = True
    chord[idx[sure]] = 2.0 * np.sqrt(np.maximum(r_in * r_in - miss2[idx[sure]], 0.0))  # lower bound
    idx = idx[~sure]
    step_chunk = max(1, 200_000 // n_samples)
    u = (np.arange(n_samples) + 0.5) / n_samples * 2.0 - 1.0  # -1..1 along the chord
    for s0 in range(0, len(idx), step_chunk):
        ii = idx[s0 : s0 + step_chunk]
        tt = t_c[ii, None] + u[None, :] * half[ii, None]
        pts = s + tt[..., None] * d[ii, None, :]
        inside = nodule.contains(pts.reshape(-1, 3)).reshape(len(ii), n_samples)
        chord[ii] = inside.mean(1) * 2.0 * half[ii]
        mask[ii] = inside.any(1)
    shape = (r1 - r0, c1 - c0)
    return mask.reshape(shape), (r0, r1, c0, c1), chord.reshape(shape)


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a full-image boolean mask (column-major, first count = background)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    # change points alternate 0->1, 1->0; counts from 0: background run first
    if counts and counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for cnt in rle["counts"]:
        if val:
            flat[pos : pos + cnt] = True
        pos += cnt
        val = not val
    return flat.reshape((h, w), order="F")


def _noise_free(phys):
    return dataclasses.replace(phys, photons_per_pixel=None)


def _box_image(drr, box, line=None, basis=None):
    from dxr_core.drr import apply_physics

    r0, r1, c0, c1 = box
    line = drr.line_integral[r0:r1, c0:c1] if line is None else line
    if basis is None and drr.basis is not None:
        basis = drr.basis[:, r0:r1, c0:c1]
    img, log_img = apply_physics(_noise_free(drr.physics), line, basis, None)
    return img, log_img


def visibility(drr_before, drr_after, mask_box, box, geometry) -> dict:
    """Contrast, local noise and CNR of one nodule (see the module docstring)."""
    r0, r1, c0, c1 = box
    if mask_box.size == 0 or not mask_box.any():
        return {"contrast": 0.0, "noise": float("nan"), "visibility": 0.0}
    # contrast: noise-free line integrals (effective energy) with and without the nodule, on the mask, in
    # image units (divided by the window width)
    lo, hi = drr_before.physics.window
    ys, xs = np.nonzero(mask_box)
    tb = (r0 + ys.min(), r0 + ys.max() + 1, c0 + xs.min(), c0 + xs.max() + 1)
    m = mask_box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    d_line = (drr_after.line_integral[tb[0] : tb[1], tb[2] : tb[3]]
              - drr_before.line_integral[tb[0] : tb[1], tb[2] : tb[3]])
    contrast = float(d_line[m].mean()) / (hi - lo)
    # local background: noise-free line integral in a 40 mm window, high-passed
    mag = geometry.sid_mm / geometry.sad_mm
    px = float(np.mean(geometry.pixel_spacing_mm))
    rows, cols = geometry.size
    cr, cc = (tb[0] + tb[1]) // 2, (tb[2] + tb[3]) // 2
    half = max(int(round(20.0 * mag / px)), 4)
    w = drr_before.line_integral[max(cr - half, 0) : min(cr + half + 1, rows),
                                 max(cc - half, 0) : min(cc + half + 1, cols)]
    sig = max(3.0 * mag / px, 0.5)
    hp = (w - ndimage.gaussian_filter(w, sig, mode="nearest")) / (hi - lo)
    sigma_anat = float(hp.std())
    n0 = drr_before.physics.photons_per_pixel or REFERENCE_PHOTONS
    t = float(np.exp(-np.clip(w, 0, 50)).mean())
    sigma_q = 1.0 / np.sqrt(max(n0 * t, 1e-9)) / (hi - lo)
    noise = float(np.sqrt(sigma_anat**2 + sigma_q**2))
    out = {"contrast": contrast, "noise": noise, "sigma_anatomy": sigma_anat, "sigma_quantum": float(sigma_q),
           "visibility": contrast / noise if noise > 0 else 0.0}
    out.update(detectability(drr_before, drr_after, tb, float(sigma_q), geometry))
    return out


ROI_MM = 64.0  # side of the detectability region at the isocentre (a 30 mm nodule fits twice, magnified)


def detectability(drr_before, drr_after, mask_bbox, sigma_quantum: float, geometry=None) -> dict:
    """NPW model-observer d' of one nodule (:mod:`dxr_core.nodules.observer`): template = the nodule's expected
    (noise-free) change of the line integrals in image units over a square region of side
    ``ROI_MM`` (see below) centred on it; NPS = the anatomical background of the
    same region without the nodule (detrended, Hann-windowed periodogram) + white quantum noise ``sigma_quantum``.
    The region is ``ROI_MM`` at the isocentre (magnified to the detector), or twice the projected nodule's larger
    side + 8 pixels if that is more, so the NPS of every nodule size is estimated on the same background."""
    from dxr_core.nodules.observer import background_nps, npw_dprime

    r0, r1, c0, c1 = mask_bbox
    rows, cols = drr_before.line_integral.shape
    geometry = drr_before.geometry if geometry is None else geometry
    mag = geometry.sid_mm / geometry.sad_mm
    px = float(np.mean(geometry.pixel_spacing_mm))
    side = int(max(round(ROI_MM * mag / px), 2 * max(r1 - r0, c1 - c0) + 8, 16))
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    a0, a1 = max(cr - side // 2, 0), min(cr - side // 2 + side, rows)
    b0, b1 = max(cc - side // 2, 0), min(cc - side // 2 + side, cols)
    lo, hi = drr_before.physics.window
    before = np.asarray(drr_before.line_integral[a0:a1, b0:b1], dtype=np.float64) / (hi - lo)
    sig = np.asarray(drr_after.line_integral[a0:a1, b0:b1], dtype=np.float64) / (hi - lo) - before
    if min(before.shape) < 8:
        return {"detectability": 0.0, "detectability_roi_px": [int(a0), int(a1), int(b0), int(b1)]}
    d = npw_dprime(sig, background_nps(before), sigma_white=sigma_quantum)
    return {"detectability": float(d), "detectability_roi_px": [int(a0), int(a1), int(b0), int(b1)]}


def add_nodules_to_drr(drr, volume: Volume, nodules: Sequence[Nodule], seed: int | None = None,
                       device: str | None = "cpu"):
    """Insert ``nodules`` in 3-D and update ``drr`` by re-tracing only the rays through each nodule's box.

    Returns (new DRR, new Volume with the nodules, labels: list of dicts with bbox/segmentation/centre/...).
    """
    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # nodule boxes are small: thread start-up/sync costs more than it saves
    try:
        return _add_nodules(drr, volume, nodules, seed, device)
    finally:
        torch.set_num_threads(n_threads)


def _add_nodules(drr, volume, nodules, seed, device):
    from dxr_core.drr import add_volume_delta

    vol = volume.with_array(np.array(volume.array, dtype=np.float32, copy=True))
    geometry = drr.geometry
    P = np.asarray(geometry.projection_matrix)
    labels = []
    cur = drr
    for k, nod in enumerate(nodules):
        t0 = time.perf_counter()
        sl, new, _ = nodule_patch(vol, nod)
        old = vol.array[sl].copy()
        lo_idx = np.array([sl[2].start, sl[1].start, sl[0].start], dtype=np.float64)
        origin = vol.index_to_world(lo_idx[None])[0]
        delta = Volume(new - old, spacing=vol.spacing, origin=origin, direction=vol.direction)
        base = Volume(old, spacing=vol.spacing, origin=origin, direction=vol.direction)
        nseed = None if seed is None else int(seed) * 1009 + k
        t1 = time.perf_counter()
        after = add_volume_delta(cur, delta, seed=nseed, base_hu=base, device=device)
        vol.array[sl] = new
        t2 = time.perf_counter()
        mask_box, box, chord = projected_mask(geometry, nod, P=P)
        lab = _label(nod, mask_box, box, geometry, P)
        t3 = time.perf_counter()
        lab.update(visibility(cur, after, mask_box, box, geometry))
        t4 = time.perf_counter()
        lab["time_ms"] = (t4 - t0) * 1000.0
        lab["time_split_ms"] = {"insert": (t1 - t0) * 1e3, "retrace": (t2 - t1) * 1e3, "mask": (t3 - t2) * 1e3,
                                "visibility": (t4 - t3) * 1e3}
        labels.append(lab)
        cur = after
    for i, lab in enumerate(labels):
        lab["overlaps"] = [j for j, other in enumerate(labels) if j != i and _bbox_overlap(lab["bbox"], other["bbox"])]
    cur.meta = dict(cur.meta)
    cur.meta["nodules"] = [dict(n.to_dict()) for n in nodules]
    vol.meta["nodules"] = [n.to_dict() for n in nodules]
    return cur, vol, labels


def _bbox_overlap(a, b) -> bool:
    """COCO [x, y, w, h] boxes share at least one pixel."""
    if a[2] <= 0 or a[3] <= 0 or b[2] <= 0 or b[3] <= 0:
        return False
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _label(nod: Nodule, mask_box: np.ndarray, box, geometry, P=None) -> dict:
    rows, cols = geometry.size
    r0, r1, c0, c1 = box
    full = np.zeros((rows, cols), bool)
    if mask_box.size:
        full[r0:r1, c0:c1] = mask_box
    ys, xs = np.nonzero(full)
    centre = _project(geometry, np.asarray(nod.center_lps)[None], P)[0]
    if len(ys):
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    else:
        bbox = [0, 0, 0, 0]
    return {
        "category": nod.kind,
        "bbox": bbox,
        "area": int(full.sum()),
        "segmentation": rle_encode(full),
        "centre_px": [float(centre[0]), float(centre[1])],
        "centre_lps": [float(c) for c in nod.center_lps],
        "diameter_mm": float(nod.diameter_mm),
        "shape": nod.shape,
        "hu": float(nod.hu),
        "seed": int(nod.seed),
        "location": nod.location,
        "in_image": bool(len(ys) > 0),
    }


def to_coco(images: Sequence[tuple[str, Any, Sequence[dict]]]) -> dict:
    """COCO dict from [(file_name, drr, labels)]: images (with projection matrix), annotations, categories."""
    out_images, anns = [], []
    for i, (name, drr, labels) in enumerate(images, start=1):
        rows, cols = drr.geometry.size
        out_images.append({"id": i, "file_name": str(name), "width": int(cols), "height": int(rows),
                           "projection_matrix": np.asarray(drr.geometry.projection_matrix).tolist(),
                           "view": getattr(drr.geometry, "view", None)})
        for lab in labels:
            a = {"id": len(anns) + 1, "image_id": i, "category_id": CATEGORY_IDS[lab["category"]], "iscrowd": 0}
            a.update({k: v for k, v in lab.items() if not k.startswith("time_")})
            anns.append(a)
    return {
        "info": {"description": "DiffusionXRay synthetic lung nodules", "version": "1.0",
                 "conventions": "bbox COCO [x,y,w,h], pixel (r,c) covers [c,c+1)x[r,r+1); centre_px (col,row) from "
                                "the projection matrix with pixel centres at integers; centre_lps in mm (DICOM LPS); "
                                "visibility = contrast-to-noise ratio; detectability = d' of a non-prewhitening "
                                "model observer (template = the nodule's signal, NPS of the local background); "
                                "overlaps = indices of this image's other labels whose bbox shares a pixel"},
        "images": out_images,
        "annotations": anns,
        "categories": [{"id": i, "name": k, "supercategory": "nodule"} for k, i in CATEGORY_IDS.items()],
    }


def write_coco(path, coco: dict) -> Path:
    from dxr_core.io.atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(coco, indent=1))


def read_coco(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"Cannot read COCO labels {str(path)!r} ({err}); give a JSON file written by dxr.") from None
