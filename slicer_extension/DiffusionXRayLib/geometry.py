"""Geometry glue between DiffusionXRay results (DICOM LPS, detector pixels) and 3D Slicer (RAS).

Slicer's world frame is RAS (x right, y anterior, z superior); DiffusionXRay files, geometry records and labels use
DICOM LPS (x left, y posterior, z superior): the two differ by the sign of x and y.

A DRR result carries its cone-beam geometry (``result["geometry"]``): ``detector_origin_lps`` is the centre of pixel
(row 0, col 0), ``row_direction`` the unit vector along a row (column index increases), ``col_direction`` the unit
vector down a column (row index increases), ``pixel_spacing_mm`` = (row spacing, col spacing). Placing the image
on that detector plane puts every pixel where the X-ray hit it, so the DRR, the CT and the nodule markups line up in
Slicer's 3-D view, and a point of the CT projects (``projection_matrix``) onto the pixel it appears in.

numpy only; no ``slicer`` import.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

#: diag(-1, -1, 1): LPS <-> RAS (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LPS_TO_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(points: Any) -> np.ndarray:
    """(3,) or (N, 3) LPS points/vectors -> RAS (the same operation converts RAS -> LPS)."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have 3 coordinates in the last axis, got shape {p.shape}")
    return p * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras


def matrix_lps_to_ras(m: Any) -> np.ndarray:
    """A 4x4 map *into* LPS (e.g. IJK -> LPS) -> the same map into RAS."""
    return LPS_TO_RAS_4 @ np.asarray(m, dtype=np.float64)


def transform_lps_to_ras(t: Any) -> np.ndarray:
    """A 4x4 transform LPS -> LPS -> the same transform RAS -> RAS."""
    return LPS_TO_RAS_4 @ np.asarray(t, dtype=np.float64) @ LPS_TO_RAS_4


def project_lps(projection_matrix: Any, points_lps: Any) -> np.ndarray:
    """(N, 3) LPS -> (N, 2) continuous (col, row) with the result's 3x4 projection matrix (pixel centres at
    integers)."""
    P = np.asarray(projection_matrix, dtype=np.float64).reshape(3, 4)
    p = np.atleast_2d(np.asarray(points_lps, dtype=np.float64))
    h = np.c_[p, np.ones(len(p))] @ P.T
    return h[:, :2] / h[:, 2:3]


def detector_point_lps(geometry: Mapping[str, Any], colrow: Any) -> np.ndarray:
    """(N, 2) continuous (col, row) -> (N, 3) LPS points on the detector plane."""
    cr = np.atleast_2d(np.asarray(colrow, dtype=np.float64))
    o = np.asarray(geometry["detector_origin_lps"], dtype=np.float64)
    u = np.asarray(geometry["row_direction"], dtype=np.float64)
    v = np.asarray(geometry["col_direction"], dtype=np.float64)
    sr, sc = (float(s) for s in geometry["pixel_spacing_mm"])
    return o[None, :] + cr[:, :1] * sc * u[None, :] + cr[:, 1:2] * sr * v[None, :]


def _unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise ValueError(f"direction {v.tolist()} has no length")
    return v / n


def detector_ijk_to_lps(geometry: Mapping[str, Any]) -> np.ndarray:
    """4x4 IJK -> LPS of a 2-D image placed on its detector: i = column, j = row, k = detector normal (1 mm)."""
    u, v = _unit(geometry["row_direction"]), _unit(geometry["col_direction"])
    n = np.cross(u, v)
    sr, sc = (float(s) for s in geometry["pixel_spacing_mm"])
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = u * sc, v * sr, n
    m[:3, 3] = np.asarray(geometry["detector_origin_lps"], dtype=np.float64)
    return m


def default_ijk_to_lps(size: Sequence[int], pixel_spacing_mm: Optional[Sequence[float]] = None) -> np.ndarray:
    """IJK -> LPS of a radiograph without geometry: a frontal (coronal) image centred on the origin, columns towards
    the patient's left, rows towards the feet (the patient's right on the viewer's left, as a PA film is read)."""
    rows, cols = int(size[0]), int(size[1])
    sr, sc = (float(s) for s in (pixel_spacing_mm or (1.0, 1.0)))
    geom = {"row_direction": [1.0, 0.0, 0.0], "col_direction": [0.0, 0.0, -1.0], "pixel_spacing_mm": [sr, sc],
            "detector_origin_lps": [0.0, 0.0, 0.0]}
    m = detector_ijk_to_lps(geom)
    m[:3, 3] = -(m[:3, 0] * (cols - 1) / 2.0 + m[:3, 1] * (rows - 1) / 2.0)
    return m


def result_ijk_to_ras(result: Mapping[str, Any]) -> np.ndarray:
    """4x4 IJK -> RAS for a result image (from its geometry, else the default frontal placement)."""
    geometry = result.get("geometry")
    if geometry and all(k in geometry for k in ("detector_origin_lps", "row_direction", "col_direction",
                                                 "pixel_spacing_mm")):
        image = result.get("image") or {}
        if image.get("size") and geometry.get("size") and list(image["size"]) != list(geometry["size"]):
            raise ValueError(f"result image size {image['size']} differs from its geometry size {geometry['size']}")
        return matrix_lps_to_ras(detector_ijk_to_lps(geometry))
    image = result.get("image") or {}
    if not image.get("size"):
        raise ValueError("the result has neither a geometry nor an image size")
    return matrix_lps_to_ras(default_ijk_to_lps(image["size"], image.get("pixel_spacing_mm")))


def split_ijk_to_ras(m: Any):
    """4x4 IJK -> RAS -> (spacing (3,), directions 3x3 with unit columns, origin (3,)) as Slicer volume nodes
    store them (``SetSpacing``, ``SetIJKToRASDirections``, ``SetOrigin``)."""
    m = np.asarray(m, dtype=np.float64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    return spacing, m[:3, :3] / spacing[None, :], m[:3, 3].copy()


def nodule_markups(result: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The nodule labels of a result as positions in RAS for Slicer markups.

    For each label: ``name``, ``category``, ``diameter_mm``, ``visibility``; ``centre_ras`` (the nodule centre in the
    CT, 3-D); ``image_ras`` (where that centre appears on the placed DRR: its projected pixel on the detector plane);
    ``roi_center_ras``, ``roi_size_mm`` (width along columns, height along rows, 1 mm thick) and ``roi_axes_ras``
    (3x3, columns = the ROI's x, y, z axes) of the label's 2-D box on the detector plane.
    """
    geometry = result.get("geometry")
    out = []
    for i, lab in enumerate(result.get("nodules") or []):
        item: Dict[str, Any] = {
            "name": f"N{i + 1}",
            "category": lab.get("category"),
            "diameter_mm": lab.get("diameter_mm"),
            "visibility": lab.get("visibility"),
            "centre_ras": None, "image_ras": None, "roi_center_ras": None, "roi_size_mm": None, "roi_axes_ras": None,
        }
        if lab.get("category"):
            item["name"] = f"N{i + 1} {lab['category']}"
        if lab.get("centre_lps") is not None:
            item["centre_ras"] = lps_to_ras(lab["centre_lps"]).tolist()
        if geometry:
            if lab.get("centre_px") is not None:
                item["image_ras"] = lps_to_ras(detector_point_lps(geometry, lab["centre_px"])[0]).tolist()
            box = lab.get("bbox")
            if box is not None and len(box) == 4 and float(box[2]) > 0 and float(box[3]) > 0:  # empty: no ROI
                x, y, w, h = (float(b) for b in box)
                # COCO box edges: pixel (r, c) covers [c, c+1) x [r, r+1), so its centre is at (c + 0.5, r + 0.5)
                # in edge coordinates and at (c, r) in the pixel-centre coordinates of the geometry.
                centre = (x + w / 2.0 - 0.5, y + h / 2.0 - 0.5)
                item["roi_center_ras"] = lps_to_ras(detector_point_lps(geometry, centre)[0]).tolist()
                sr, sc = (float(s) for s in geometry["pixel_spacing_mm"])
                item["roi_size_mm"] = [w * sc, h * sr, 1.0]
                u, v = _unit(geometry["row_direction"]), _unit(geometry["col_direction"])
                axes = np.stack([u, v, np.cross(u, v)], axis=1)
                item["roi_axes_ras"] = (LPS_TO_RAS @ axes).tolist()
        out.append(item)
    return out
