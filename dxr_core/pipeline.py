"""The one path from a CT to a labelled (enhanced) radiograph, used by every driver.

CT (HU) -> nodules (random and/or at given points) -> DRR -> optional DDPM-HQ enhancement -> labels on every
grid (COCO box, RLE mask, centre, projection matrix). ``dxr dataset``, the MONAI Label tasks (``drr``,
``drr_enhance``) and, through them, the Slicer module call these functions with a :class:`dxr_core.params.DRRParams`
request, so the same request gives the same pixels and labels everywhere.

    >>> p = DRRParams.from_request({"size": 512, "nodules": 2, "seed": 3})
    >>> drr, labels = render(volume, p)
    >>> hq, grid, hq_labels = enhance_drr(drr, labels, enhancer, scale=2, steps=20, seed=3)
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence

import numpy as np

from dxr_core.errors import OptionError
from dxr_core.io.radiograph import jsonable
from dxr_core.params import DRRParams


def make_nodules(volume, p: DRRParams, geometry=None) -> list:
    """The nodules of a request (points first, then random ones); ``dxr drr``'s nodule hook calls this too.
    ``geometry``: the render's, so random nodules keep their projected boxes apart in that view."""
    if not p.nodules and not p.nodule_points:
        return []
    from dxr_core.nodules import LungDistance, Nodule, check_inside_lung, random_nodules

    seed = p.seed if p.nodule_seed is None else p.nodule_seed
    lung = LungDistance(volume)
    out = []
    if p.nodule_points:
        pts = np.asarray(p.nodule_points, dtype=np.float64)
        ijk = volume.world_to_index(pts)
        shape = np.asarray(volume.shape_xyz, dtype=np.float64)
        outside = [i for i, q in enumerate(ijk) if np.any(q < -0.5) or np.any(q > shape - 0.5)]
        if outside:
            corners = volume.corners_lps()
            raise OptionError(
                f"nodule_points {[p.nodule_points[i] for i in outside]} lie outside the CT (LPS bounds "
                f"{np.round(corners.min(0), 1).tolist()} .. {np.round(corners.max(0), 1).tolist()} mm); "
                "give points inside the lungs."
            )
        kinds = p.nodule_types or ["solid"]
        lo, hi = p.nodule_size
        for i, q in enumerate(pts):
            n = Nodule(kind=kinds[i % len(kinds)], diameter_mm=(lo + hi) / 2.0, center_lps=tuple(q),
                       shape=(p.nodule_shapes or ["sphere"])[0], seed=seed + i)
            check_inside_lung(n, lung)
            out.append(n)
    out += random_nodules(volume, p.nodules, seed=seed, kinds=p.nodule_types, shapes=p.nodule_shapes,
                          diameter_range=tuple(p.nodule_size), lung=lung, location=p.nodule_location,
                          avoid_overlap=not p.nodule_overlap, geometry=geometry)
    return out


def cleanup_steps(p: DRRParams) -> str:
    """The clean-up steps of a request: ``p.cleanup``, else all four with a preset and none without."""
    from dxr_core.drr.cleanup import default_steps

    return default_steps(p.cleanup, p.preset)


def cleaned_ct(volume, p: DRRParams):
    """The CT as ``render`` projects it for request ``p``: cleaned up (couch, field of view, scan ends, contrast;
    by default when ``p.preset`` is set), else unchanged; returns (volume, report or None). Cache it to render many
    images of one CT (``render(..., cleaned=...)``)."""
    from dxr_core.drr.cleanup import cleanup_ct, parse_steps

    options = parse_steps(cleanup_steps(p))
    if not options.any:
        return volume, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a contrast warning is in the report (and the sidecar)
        return cleanup_ct(volume, options)


def geometry_of(volume, p: DRRParams):
    """Cone-beam geometry of a request: with a preset its 43 cm field at ``p.size`` pixels (unless
    ``p.pixel_spacing``), without one the smallest pitch that shows the whole CT."""
    from dxr_core.drr import make_geometry

    spacing = p.pixel_spacing
    if p.preset and spacing is None:
        from dxr_core.drr.presets import get_preset

        field = get_preset(p.preset).detector_mm
        spacing = (field / p.size[0], field / p.size[1])
    return make_geometry(volume, view=p.view, sid_mm=p.sid, sad_mm=p.sad, size=p.size, pixel_spacing_mm=spacing,
                         rotation_deg=p.rotation)


def physics_of(p: DRRParams, option_names: str | None = None):
    """:class:`Physics` of a request: the preset's beam (filtration incl. Cu) or the plain one, at ``p.kvp``.
    ``option_names``: how the caller spells the options an error asks to check."""
    names = option_names or "mode, kvp, energy_kev and dose"
    if p.preset:
        from dxr_core.drr.presets import preset_physics

        try:
            return preset_physics(p.preset, mode=p.mode, kvp=p.kvp, photons_per_pixel=p.dose or None,
                                  energy_kev=p.energy_kev)
        except (TypeError, ValueError) as err:
            raise OptionError(f"Invalid physics settings ({err}); check {names}.") from None
    from dxr_core.drr.physics import physics_from_options

    return physics_from_options(p.mode, p.kvp, p.dose or None, p.energy_kev, option_names=names)


def acquisition_of(p: DRRParams):
    """:class:`Acquisition` of a request (scatter + grid, detector, processing), or None for the raw projection
    (no preset and no switch given)."""
    switches = (p.scatter, p.grid_ratio, p.detector, p.processing)
    if not p.preset and all(v is None for v in switches):
        return None
    from dxr_core.drr.acquisition import Acquisition, AntiScatterGrid, DetectorModel, Processing, ScatterModel

    if p.preset:
        from dxr_core.drr.presets import preset_acquisition

        return preset_acquisition(p.preset, scatter=p.scatter is not False, grid_ratio=p.grid_ratio,
                                  detector=p.detector is not False, processing=p.processing or "default")
    return Acquisition(scatter=ScatterModel(enabled=bool(p.scatter)), grid=AntiScatterGrid(p.grid_ratio or 0.0),
                       detector=DetectorModel(enabled=bool(p.detector)),
                       processing=Processing(mode=p.processing or "raw"))


def render(volume, p: DRRParams, cleaned=None):
    """CT (HU) + request -> (DRR, nodule labels): clean-up, geometry, physics, acquisition, base render, then each
    nodule added by re-tracing only the rays through it. With ``p.preset`` (the default, pa-chest) the clinical
    acquisition (scatter, grid, detector, processing) is simulated and the CT is cleaned up first (couch, field of
    view, scan ends, contrast), as ``dxr drr`` does; the clean-up report is in ``drr.meta["cleanup"]``. ``cleaned``:
    the result of :func:`cleaned_ct` for this CT, when the caller keeps it between images."""
    from dxr_core.drr import render_drr

    # the detector is fitted to the measured CT, before clean-up widens its grid (as `dxr drr` does)
    geometry = geometry_of(volume, p)
    volume, report = cleaned if cleaned is not None else cleaned_ct(volume, p)
    drr = render_drr(volume, geometry, physics_of(p), seed=p.seed, acquisition=acquisition_of(p))
    if report is not None:
        drr.meta["cleanup"] = report
    labels: list = []
    nodules = make_nodules(volume, p, geometry=drr.geometry)
    if nodules:
        from dxr_core.nodules import add_nodules_to_drr

        drr, _with_nodules, labels = add_nodules_to_drr(drr, volume, nodules, seed=p.seed)
        labels = [{k: v for k, v in lab.items() if not k.startswith("time_")} for lab in labels]  # no timings
    return drr, labels


def drr_result_json(drr, labels: Sequence[Any], p: DRRParams, pixel_spacing, size, task: str) -> Dict[str, Any]:
    """The JSON of a result: the DRR's sidecar (geometry, physics), its projection matrix, the image description
    (``size`` rows/cols and ``pixel_spacing`` row/col of the grid the labels are on), the labels and the request."""
    side = jsonable(drr.sidecar())
    out: Dict[str, Any] = {"task": task}
    out.update(side)
    out["projection_matrix"] = jsonable(np.asarray(drr.geometry.projection_matrix))
    out["image"] = {
        "size": [int(size[0]), int(size[1])],  # rows, cols
        "pixel_spacing_mm": [float(pixel_spacing[0]), float(pixel_spacing[1])],  # row, col (DICOM order)
        "dtype": p.output_dtype,
        "value_range": [0, 65535] if p.output_dtype == "uint16" else [0.0, 1.0],
        "format": "nrrd",
        "photometric": "MONOCHROME2 (bone bright)",
    }
    if drr.meta.get("cleanup") is not None:
        out["cleanup"] = jsonable(drr.meta["cleanup"])
    out["nodules"] = jsonable(list(labels))
    out["request"] = p.to_dict()
    return out


def enhance_drr(drr, labels: Sequence[Any], enhancer, scale: float = 2.0, sampler: str | None = None,
                steps: int | None = None, seed: int = 0, tile: int | None = 512, temperature: float | None = None):
    """Enhance a DRR and carry its labels: returns (image (H, W) float32 in [0, 1], the detector geometry of the
    enhanced grid (same detector, finer pixels: its projection matrix maps onto the new pixels), labels on it)."""
    from dxr_core.nodules.rescale import rescale_labels

    # sampler / steps / temperature None: the model's own defaults (Enhancer.default_sampling, default_temperature)
    out = enhancer.enhance(drr.image, scale=scale, sampler=sampler, steps=steps, seed=seed, tile=tile,
                           temperature=temperature)
    rows, cols = out.shape
    lq_rows, lq_cols = drr.geometry.size
    grid = drr.geometry.with_size((rows, cols))
    return np.asarray(out, dtype=np.float32), grid, rescale_labels(labels, rows / lq_rows, cols / lq_cols)
