"""dxr_core.phantom: a seeded, analytic chest CT phantom voxelised at any spacing.

    >>> from dxr_core.phantom import make_chest_phantom
    >>> ct = make_chest_phantom(seed=3, spacing_mm=(0.7, 0.7, 2.5))   # Volume in HU, LPS, supine

The anatomy (:mod:`dxr_core.phantom.anatomy`) is a list of analytic primitives painted in order; the voxeliser
(:mod:`dxr_core.phantom.voxelize`) supersamples voxels on surfaces so that any spacing is the box average of
the same continuous phantom; :mod:`dxr_core.phantom.effects` adds slice profile, kernel blur and dose noise;
:mod:`dxr_core.phantom.dicom` writes a CT Image Storage series.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dxr_core.errors import OptionError
from dxr_core.phantom.anatomy import HU, ChestModel, build_chest
from dxr_core.phantom.effects import CTEffects, apply_ct_effects
from dxr_core.phantom.pairs import drr_pair  # noqa: F401  (fine/coarse DRR pairs for DDPM-HQ)
from dxr_core.phantom.voxelize import voxelize as voxelize_layers
from dxr_core.volume import Volume

__all__ = ["make_chest_phantom", "build_chest", "ChestModel", "CTEffects", "HU", "voxelize_layers",
           "write_dicom_series"]


def _triple(v, name: str) -> np.ndarray:
    a = np.atleast_1d(np.asarray(v, dtype=np.float64)).ravel()
    if a.size == 1:
        a = np.repeat(a, 3)
    if a.size != 3 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise OptionError(f"{name} must be one positive number or three (x,y,z) in mm, got {v!r}; e.g. 0.7,0.7,2.5.")
    return a


def make_chest_phantom(
    seed: int = 0,
    spacing_mm: float | Sequence[float] = (1.5, 1.5, 2.5),
    shape: Sequence[int] | None = None,
    fov_mm: Sequence[float] | None = None,
    center_lps: Sequence[float] | None = None,
    supersample: bool = True,
    ct_effects: CTEffects | None = None,
    breast: bool = False,
    progress: bool = False,
) -> Volume:
    """Voxelise the seeded chest phantom; returns a :class:`Volume` of HU (float32), identity direction, LPS.

    ``shape`` (x, y, z voxels) or ``fov_mm`` (x, y, z) choose the grid; by default it covers the body from the
    lung apices to below the diaphragm. The grid is centred on ``center_lps`` (default: the body's centre).
    """
    model = build_chest(int(seed), breast=breast)
    sp = _triple(spacing_mm, "Spacing")
    default_fov = model.fov_hi - model.fov_lo
    center = np.asarray(center_lps, dtype=np.float64) if center_lps is not None else (model.fov_hi + model.fov_lo) / 2
    if shape is not None:
        n = np.asarray(shape, dtype=np.int64).ravel()
        if n.size != 3 or np.any(n < 1):
            raise OptionError(f"Shape must be three positive voxel counts (x,y,z), got {shape!r}.")
    else:
        fov = _triple(fov_mm, "Field of view") if fov_mm is not None else default_fov
        n = np.maximum(1, np.round(fov / sp)).astype(np.int64)
    if int(np.prod(n)) > 1_200_000_000:
        raise OptionError(f"A {tuple(n)} voxel phantom is too large; use a coarser --spacing.")
    origin = center - (n - 1) / 2.0 * sp
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n[2]), desc="phantom", unit="slice")
    arr = voxelize_layers(model.layers, sp, n, origin, supersample=supersample, progress=bar.update if bar else None)
    if bar is not None:
        bar.close()
    if ct_effects is not None:
        arr = apply_ct_effects(arr, sp, ct_effects)
    meta = {
        "Modality": "CT",
        "PatientName": "DXR^Phantom",
        "PatientID": f"DXR-PHANTOM-{int(seed)}",
        "PatientSex": "F" if breast else "M",
        "PatientPosition": "HFS",
        "StudyDescription": "DiffusionXRay chest phantom",
        "SeriesDescription": f"Chest phantom seed {int(seed)}",
        "phantom_seed": int(seed),
        "phantom_params": {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                           for k, v in model.params.items()},
        "ct_effects": ct_effects.to_dict() if ct_effects else None,
        "source": f"phantom:{int(seed)}",
    }
    return Volume(array=arr.astype(np.float32, copy=False), spacing=tuple(sp), origin=tuple(origin),
                  direction=np.eye(3), meta=meta)


def write_dicom_series(volume: Volume, folder, **kw):
    from dxr_core.phantom.dicom import write_dicom_series as _w

    return _w(volume, folder, **kw)
