"""Lung mask for any chest CT in HU: threshold, drop outside air, keep the large air components, fill holes."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from dxr_core.errors import InputError
from dxr_core.volume import Volume


def lung_mask(volume: Volume, threshold_hu: float = -400.0, min_volume_ml: float = 30.0) -> np.ndarray:
    """Boolean (z, y, x) mask of the lungs (air-filled lung parenchyma with vessels and nodules filled in).

    Steps: voxels below ``threshold_hu`` are air; in every axial slice air connected to the slice border is
    outside the body and dropped (per slice, so the trachea leaving the top of the volume does not carry the
    lungs away); the remaining 3-D components larger than ``min_volume_ml`` and at least 10 % of the largest are
    kept (lungs; the stomach bubble and bowel gas are small); holes are filled slice by slice (vessels, nodules).
    Raises :class:`InputError` when nothing lung-like is found.
    """
    a = np.asarray(volume.array)
    air = a < threshold_hu
    out_air = np.zeros_like(air)
    for z in range(air.shape[0]):
        lab, n = ndimage.label(air[z])
        if n == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border > 0]
        if border.size:
            out_air[z] = np.isin(lab, border)
    inner = air & ~out_air
    lab, n = ndimage.label(inner)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    if n:
        sizes = np.bincount(lab.ravel())[1:] * voxel_ml
        keep = np.nonzero((sizes >= min_volume_ml) & (sizes >= 0.1 * sizes.max()))[0] + 1
    else:
        keep = np.zeros(0, dtype=int)
    if keep.size == 0:
        raise InputError(
            "No lungs found in the CT (no air-filled region inside the body below "
            f"{threshold_hu:g} HU larger than {min_volume_ml:g} ml); give a chest CT in Hounsfield units "
            "that covers the lungs."
        )
    mask = np.isin(lab, keep)
    for z in range(mask.shape[0]):
        if mask[z].any():
            mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask
