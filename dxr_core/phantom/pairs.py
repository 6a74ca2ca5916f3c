"""Aligned LQ/HQ DRR pairs of the seeded chest phantom, for training/evaluating DDPM-HQ against exact ground truth.

    >>> from dxr_core.phantom import drr_pair
    >>> lq, hq = drr_pair(seed=3, size=256)      # lq (128, 128), hq (256, 256), float32 in [0, 1]

- **HQ**: DRR of a *finely* voxelised phantom (isotropic, box-averaged voxels, no CT effects, no noise) on a
  ``size x size`` detector: the phantom's exact ground truth at that detector resolution.
- **LQ**: DRR of a *coarse, clinical-CT-like* voxelisation of the same seed (thick slices, slice-sensitivity
  profile, reconstruction-kernel blur, optional CT dose noise and optional DRR quantum noise, all seeded) on the
  same detector plane and field of view with half the pixels (``geometry.with_size``).

Both use one geometry (source, detector plane, field of view), one :class:`~dxr_core.drr.Physics` (polychromatic,
``kvp``) and one display window, so pixel ``(r, c)`` of the LQ covers HQ pixels ``(2r..2r+1, 2c..2c+1)``.

Choices (documented because they trade realism for speed on a CPU):
- Field of view: the phantom's default box (whole trunk, above the apices to below the domes); the detector is the
  smallest square that shows it (``make_geometry`` default, 5 % margin). The geometry is computed from that box,
  not from either voxel grid, so both DRRs share it exactly.
- Fine spacing (default ``None``): isotropic, 2/3 of the HQ detector pixel projected to the isocentre, clamped to
  [0.5, 4] mm (about 1.1 mm for a 256 detector). Finer voxels would not change the HQ (the projector samples rays,
  the pixel is the limit) but cost time (voxel count ~ 1/spacing^3).
- Coarse spacing (default ``None``): clinical ``(0.7, 0.7, 2.5)`` mm, but never finer than the fine spacing on
  any axis: the LQ pixel is twice the HQ pixel, so 0.7 mm in-plane voxels are invisible in the LQ and only cost
  time (at 256: ~12 s instead of ~6 s for the coarse grid). Give ``coarse_spacing_mm=(0.7, 0.7, 2.5)`` to force it.
- CT effects (default ``CTEffects(slice_thickness_mm=3.0, kernel="standard")``): 3 mm slice profile on the 2.5 mm
  grid, "standard" body kernel (0.9 mm FWHM), no dose noise. Pass ``None`` for a plain coarse voxelisation, or a
  ``CTEffects(dose_mAs=...)`` for CT noise; its noise seed is derived from (pair seed, ``ct_effects.seed``).
- Physics: poly ``kvp`` spectrum, air clipping as in ``dxr drr``; window ``None`` = the :class:`Physics` default
  (the same intensity mapping as ``dxr drr`` outputs, so a model trained on these pairs sees the values it will
  get at inference). HQ is noise-free; ``lq_photons`` adds seeded quantum noise to the LQ only.
- Size must be even (LQ = size/2). Measured on the shared 2-core CPU: 256 -> ~12 s a pair (fine 1.11 mm
  voxelisation ~6.5 s, coarse 1.11 x 1.11 x 2.5 mm ~6 s, both renders < 0.1 s with the native kernel; +2.5 s for
  the first pair of a process), 128 -> ~6.5 s, 64 -> ~4 s (per-seed anatomy build and surface supersampling set a
  floor). 512 (fine 0.55 mm) is roughly 8x the 256 voxels: use it sparingly or pass a coarser fine_spacing_mm.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from dxr_core.errors import OptionError
from dxr_core.phantom.effects import CTEffects

__all__ = ["drr_pair", "pair_geometry", "DEFAULT_CT_EFFECTS", "CLINICAL_SPACING_MM"]

DEFAULT_CT_EFFECTS = CTEffects(slice_thickness_mm=3.0, kernel="standard", dose_mAs=None, seed=0)
CLINICAL_SPACING_MM = (0.7, 0.7, 2.5)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def pair_geometry(seed: int, size: int = 256, view: str = "pa", breast: bool = False):
    """(HQ geometry, LQ geometry, fov box lo, fov box hi) for a seed: the detector that shows the phantom's
    default box; the LQ geometry is the same detector with half the pixels."""
    from dxr_core.drr import make_geometry
    from dxr_core.phantom.anatomy import build_chest
    from dxr_core.volume import Volume

    model = build_chest(int(seed), breast=breast)
    lo, hi = np.asarray(model.fov_lo, np.float64), np.asarray(model.fov_hi, np.float64)
    sp = (hi - lo) / 2.0  # a 2x2x2 stand-in whose outer corners are the box: the geometry depends on no voxel grid
    box = Volume(array=np.zeros((2, 2, 2), np.float32), spacing=tuple(sp), origin=tuple(lo + sp / 2),
                 direction=np.eye(3), meta={})
    g_hq = make_geometry(box, view=view, size=(size, size), isocenter_lps=(lo + hi) / 2)
    return g_hq, g_hq.with_size((size // 2, size // 2)), lo, hi


def _voxelise(seed: int, spacing: np.ndarray, lo: np.ndarray, hi: np.ndarray, ct_effects, breast: bool):
    from dxr_core.phantom import make_chest_phantom

    return make_chest_phantom(seed=int(seed), spacing_mm=tuple(float(s) for s in spacing), fov_mm=tuple(hi - lo),
                              center_lps=tuple((lo + hi) / 2), supersample=True, ct_effects=ct_effects, breast=breast)


def drr_pair(
    seed: int,
    size: int = 256,
    view: str = "pa",
    fine_spacing_mm: float | Sequence[float] | None = None,
    coarse_spacing_mm: float | Sequence[float] | None = None,
    ct_effects: CTEffects | None = DEFAULT_CT_EFFECTS,
    kvp: float = 120.0,
    window: tuple[float, float] | None = None,
    lq_photons: float | None = None,
    breast: bool = False,
    return_info: bool = False,
):
    """``(lq, hq)``: lq float32 (size/2, size/2) and hq float32 (size, size) in [0, 1], bone bright, aligned.

    Deterministic for ``seed`` (phantom anatomy, CT noise and LQ quantum noise are all derived from it). With
    ``return_info=True`` returns ``(lq, hq, info)``; info holds both geometries (``to_dict``), the spacings,
    CT effects, physics and timings in seconds.
    """
    from dxr_core.drr import Physics, render_drr
    from dxr_core.phantom import _triple  # the phantom's own spacing parser (late: the package imports this module)

    size = int(size)
    if size < 8 or size % 2:
        raise OptionError(f"drr_pair size {size} must be an even number of pixels >= 8 (the LQ has size/2), e.g. 256.")
    t0 = time.perf_counter()
    g_hq, g_lq, lo, hi = pair_geometry(seed, size, view=view, breast=breast)
    pix_iso = min(g_hq.pixel_spacing_mm) * g_hq.sad_mm / g_hq.sid_mm
    fine = (_triple(fine_spacing_mm, "fine_spacing_mm") if fine_spacing_mm is not None
            else np.repeat(float(np.clip(round(pix_iso * 2 / 3, 2), 0.5, 4.0)), 3))
    if coarse_spacing_mm is not None:
        coarse = _triple(coarse_spacing_mm, "coarse_spacing_mm")
    else:
        coarse = np.maximum(np.asarray(CLINICAL_SPACING_MM), fine)
    fx = ct_effects
    if fx is not None:
        fx = replace(fx, seed=_derived_seed(seed, fx.seed, 1))
    physics_kw = {"mode": "poly", "kvp": float(kvp)}
    if window is not None:
        physics_kw["window"] = tuple(float(w) for w in window)
    ph_hq = Physics(**physics_kw)
    ph_lq = Physics(**physics_kw, photons_per_pixel=lq_photons)

    t1 = time.perf_counter()
    v_hq = _voxelise(seed, fine, lo, hi, None, breast)
    t2 = time.perf_counter()
    hq = render_drr(v_hq, g_hq, ph_hq, seed=None)
    del v_hq
    t3 = time.perf_counter()
    v_lq = _voxelise(seed, coarse, lo, hi, fx, breast)
    t4 = time.perf_counter()
    lq = render_drr(v_lq, g_lq, ph_lq, seed=_derived_seed(seed, 2) if lq_photons is not None else None)
    del v_lq
    t5 = time.perf_counter()
    lq_img = np.clip(lq.image, 0, 1).astype(np.float32)
    hq_img = np.clip(hq.image, 0, 1).astype(np.float32)
    if not return_info:
        return lq_img, hq_img
    info = {
        "seed": int(seed), "view": view, "size": size,
        "fine_spacing_mm": fine.tolist(), "coarse_spacing_mm": coarse.tolist(),
        "ct_effects": fx.to_dict() if fx is not None else None,
        "physics_hq": ph_hq.to_dict(), "physics_lq": ph_lq.to_dict(),
        "geometry_hq": g_hq.to_dict(), "geometry_lq": g_lq.to_dict(),
        "pixel_iso_mm": pix_iso,
        "timings_s": {"geometry": t1 - t0, "voxelise_fine": t2 - t1, "render_hq": t3 - t2,
                      "voxelise_coarse": t4 - t3, "render_lq": t5 - t4, "total": t5 - t0},
    }
    return lq_img, hq_img, info
