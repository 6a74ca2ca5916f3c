"""``acquisition`` (:func:`acquisition_2d`): a 2-D approximation of how a radiograph looks as a DRR of a
clinical thick-slice CT.

The faithful route needs the CT: voxelise or resample it at clinical spacing, apply the slice-sensitivity profile,
reconstruction kernel and dose noise of :mod:`dxr_core.phantom.effects` (``CTEffects``), and render the DRR with
:mod:`dxr_core.drr`; :func:`dxr_core.phantom.drr_pair` does exactly that for the procedural phantom (its LQ image).
This method is for the case where only a 2-D radiograph exists (a real HQ radiograph, or a DRR of a fine CT): it
applies, in the image plane, the blur and sampling that those 3-D effects produce after projection. It is an
approximation, named and documented as such:

- Frame: image rows run cranio-caudal (the CT z axis; true for PA, AP and lateral chest views), columns run along
  the CT in-plane axis that stays visible (x for PA/AP); the depth axis is integrated by the projection, so blur
  along it does not show. Lengths are in mm at the isocentre (patient scale): ``pixel_spacing_mm`` at the
  detector divided by ``magnification`` (default 1.5 = SID 1500 / SAD 1000, the ``dxr drr`` defaults), or, when
  the spacing is unknown, ``field_mm`` (default 400 mm of patient across the longer image side) / pixels.
- Slice sampling (rows): a ray through a CT with slice spacing ``slice_spacing_mm`` sees the slab averages,
  linearly interpolated between slice centres; for the nearly parallel rays of a chest DRR that is the projected
  image averaged over slabs of that height and linearly interpolated back (area resample down, linear up).
  The slice grid's phase relative to the anatomy is random (drawn from the seed).
- Slice sensitivity profile (rows): a gaussian of FWHM ``sqrt(T^2 - s^2)`` for thickness ``T`` and spacing ``s``
  (the slab average already supplies the spacing part), the rule of :func:`dxr_core.phantom.effects.apply_ct_effects`.
- In-plane voxels and kernel (columns): the same slab sampling with ``inplane_spacing_mm``, then a gaussian of the
  kernel's FWHM (``KERNEL_FWHM_MM`` of :mod:`dxr_core.phantom.effects`: soft 1.2, standard 0.9, sharp 0.6 mm; sharp
  adds the same mild unsharp mask).
- Noise: CT noise averages out along a ray; ``noise`` (default 0) adds seeded gaussian noise of that standard
  deviation (image units) for a visibly noisy DRR.
- Finally the image is area-averaged onto the LQ grid (a detector with ``scale`` times larger pixels).
Not modelled: cone-beam obliquity of rays across slices (rows far from the central ray mix neighbouring slabs a
little more), helical interpolation, beam hardening and scatter differences between a DRR and a radiograph.
Defaults follow :data:`dxr_core.phantom.pairs.DEFAULT_CT_EFFECTS` (3 mm slices on a 2.5 mm grid, standard kernel)
and :data:`dxr_core.phantom.pairs.CLINICAL_SPACING_MM` (0.7 mm in-plane).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from dxr_core.degrade.resize import resize_torch
from dxr_core.errors import OptionError
from dxr_core.phantom.effects import KERNEL_FWHM_MM
from dxr_core.phantom.pairs import CLINICAL_SPACING_MM, DEFAULT_CT_EFFECTS

_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _slab_sample(img: np.ndarray, axis: int, slab_px: float, offset_px: int) -> np.ndarray:
    """Average over slabs of ``slab_px`` pixels along ``axis`` (grid shifted by ``offset_px``), linear back."""
    if slab_px <= 1.0:
        return img
    a = np.moveaxis(img, axis, 0)
    pad = int(offset_px)
    a = np.concatenate([a[:pad][::-1], a], axis=0) if pad > 0 else a  # mirror so the grid phase shifts
    n = a.shape[0]
    m = max(1, int(round(n / slab_px)))
    coarse = resize_torch(a, (m, a.shape[1]), "area")
    back = resize_torch(coarse, (n, a.shape[1]), "bilinear")
    return np.moveaxis(back[pad:], 0, axis)


def acquisition_2d(image: np.ndarray, out_shape, rng: np.random.Generator, *, pixel_spacing_mm=None,
                magnification: float = 1.5, field_mm: float = 400.0,
                slice_thickness_mm: float = float(DEFAULT_CT_EFFECTS.slice_thickness_mm),
                slice_spacing_mm: float = float(CLINICAL_SPACING_MM[2]),
                inplane_spacing_mm: float = float(CLINICAL_SPACING_MM[0]),
                kernel: str = str(DEFAULT_CT_EFFECTS.kernel), noise: float = 0.0):
    """2-D approximation of the thick-slice CT look (module docstring); returns ``(lq, {"model": ..., ...})``."""
    h, w = image.shape
    if pixel_spacing_mm is not None:
        ps = np.atleast_1d(np.asarray(pixel_spacing_mm, np.float64)).ravel()
        ps = np.repeat(ps, 2) if ps.size == 1 else ps
        if ps.size != 2 or np.any(~np.isfinite(ps)) or np.any(ps <= 0) or not magnification >= 1:
            raise OptionError(f"pixel_spacing_mm {pixel_spacing_mm!r} must be one or two positive mm values and "
                              f"magnification ({magnification!r}) >= 1.")
        iso = ps / float(magnification)
    else:
        if not field_mm > 0:
            raise OptionError(f"field_mm {field_mm!r} must be a positive width in mm, e.g. 400.")
        iso = np.repeat(float(field_mm) / max(h, w), 2)
    if kernel not in KERNEL_FWHM_MM:
        raise OptionError(f"Unknown reconstruction kernel {kernel!r}; use one of {sorted(KERNEL_FWHM_MM)}.")
    for name, v in (("slice_thickness_mm", slice_thickness_mm), ("slice_spacing_mm", slice_spacing_mm),
                    ("inplane_spacing_mm", inplane_spacing_mm)):
        if not (np.isfinite(v) and v > 0):
            raise OptionError(f"{name} {v!r} must be a positive number of mm.")
    if not (np.isfinite(noise) and noise >= 0):
        raise OptionError(f"noise {noise!r} must be a standard deviation >= 0 in image units (e.g. 0.01).")
    row_px, col_px = float(iso[0]), float(iso[1])
    z_slab, x_slab = slice_spacing_mm / row_px, inplane_spacing_mm / col_px
    z_off = int(rng.integers(0, max(1, int(np.ceil(z_slab)))))
    x_off = int(rng.integers(0, max(1, int(np.ceil(x_slab)))))
    img = image.astype(np.float32)
    img = _slab_sample(img, 0, z_slab, z_off)
    ssp = np.sqrt(max(slice_thickness_mm ** 2 - slice_spacing_mm ** 2, 0.0)) / _FWHM / row_px
    if ssp > 0.05:
        img = ndimage.gaussian_filter1d(img, ssp, axis=0, mode="nearest")
    img = _slab_sample(img, 1, x_slab, x_off)
    k = KERNEL_FWHM_MM[kernel] / _FWHM / col_px
    if k > 0.05:
        img = ndimage.gaussian_filter1d(img, k, axis=1, mode="nearest")
    if kernel == "sharp":
        img = img + 0.5 * (img - ndimage.gaussian_filter1d(img, max(1.0, inplane_spacing_mm / col_px), axis=1,
                                                           mode="nearest"))
    if noise > 0:
        img = img + rng.normal(0.0, float(noise), img.shape).astype(np.float32)
    out = resize_torch(np.clip(img, 0, 1).astype(np.float32), out_shape, "area")
    return out, {"model": "2-D approximation of a DRR of a thick-slice CT (docs/degrade.md)",
                 "iso_pixel_mm": [row_px, col_px], "slice_slab_px": z_slab, "inplane_slab_px": x_slab,
                 "slice_offset_px": z_off, "inplane_offset_px": x_off, "ssp_sigma_px": float(ssp),
                 "kernel_sigma_px": float(k)}
