"""MRML glue: CT volume node -> temporary NRRD, result NRRD + JSON -> volume node and nodule markups.

Works on any ``vtkMRMLScene`` passed in (Slicer's ``slicer.mrmlScene`` in the application, a bare scene from PyPI
``slicer-core`` in tests). Nodes are created through the scene (``AddNewNodeByClass``), so this file imports neither
``slicer`` nor ``vtk``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from .geometry import nodule_markups, result_ijk_to_ras, split_ijk_to_ras

RESULT_ATTRIBUTE = "DiffusionXRay.result"


def _storage(scene):
    return scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")


def write_volume_node(scene, volume_node, path: str, compress: bool = True) -> str:
    """Write ``volume_node`` to ``path`` (NRRD: Slicer writes LPS, as the server expects) without touching the
    node's own storage node. Returns ``path``; raises RuntimeError with a sentence when it cannot."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise RuntimeError("The selected CT volume has no image data; load a CT first.")
    dims = volume_node.GetImageData().GetDimensions()
    if min(dims) < 2:
        raise RuntimeError(f"The selected volume is {dims[0]} x {dims[1]} x {dims[2]} voxels, not a 3-D CT; select a "
                           "CT volume.")
    storage = _storage(scene)
    try:
        storage.SetFileName(path)
        storage.SetUseCompression(1 if compress else 0)
        if not storage.WriteData(volume_node) or not os.path.isfile(path):
            raise RuntimeError(f"Could not write the CT to {path!r}; check free space in the temporary folder.")
    finally:
        scene.RemoveNode(storage)
    return path


def load_result_volume(scene, image_path: str, result: Dict[str, Any], name: str = "DRR"):
    """Read the result NRRD into a new scalar volume node placed by :func:`result_ijk_to_ras` (on the DRR's detector
    plane, right spacing), with a [0, 1] (or uint16) window and the result JSON in the node attribute
    ``DiffusionXRay.result``."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = _storage(scene)
    try:
        storage.SetFileName(image_path)
        if not storage.ReadData(node) or node.GetImageData() is None:
            scene.RemoveNode(node)
            raise RuntimeError(f"Could not read the server's result image {image_path!r}.")
    finally:
        scene.RemoveNode(storage)  # the file is temporary: saving the scene must ask for a new place
    spacing, directions, origin = split_ijk_to_ras(result_ijk_to_ras(result))
    node.SetSpacing(*spacing.tolist())
    node.SetOrigin(*origin.tolist())
    node.SetIJKToRASDirections(*directions.ravel().tolist())
    slim = {k: v for k, v in result.items() if k != "nodules"}
    slim["nodule_count"] = len(result.get("nodules") or [])
    node.SetAttribute(RESULT_ATTRIBUTE, json.dumps(slim))
    if hasattr(node, "CreateDefaultDisplayNodes"):
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and hasattr(display, "SetWindowLevelMinMax"):
        hi = 65535.0 if (result.get("image") or {}).get("dtype") == "uint16" else 1.0
        display.SetAutoWindowLevel(0)
        display.SetWindowLevelMinMax(0.0, hi)
    return node


def add_nodule_markups(scene, result: Dict[str, Any], prefix: str = "DRR") -> Dict[str, Any]:
    """Markups for the result's nodule labels: fiducials at the nodule centres in the CT (``centres``), fiducials
    where they appear on the placed DRR (``image_points``), and one ROI per projected 2-D box (``rois``).
    Returns {"centres": node|None, "image_points": node|None, "rois": [nodes]}."""
    items = nodule_markups(result)
    out: Dict[str, Any] = {"centres": None, "image_points": None, "rois": []}
    if not items:
        return out

    def fiducials(key: str, name: str):
        pts = [(it["name"], it[key]) for it in items if it.get(key) is not None]
        if not pts:
            return None
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        if hasattr(node, "CreateDefaultDisplayNodes"):
            node.CreateDefaultDisplayNodes()
        for label, p in pts:
            node.AddControlPoint([float(v) for v in p], label)
        node.SetAttribute(RESULT_ATTRIBUTE + ".kind", key)
        return node

    out["centres"] = fiducials("centre_ras", f"{prefix} nodules (CT)")
    out["image_points"] = fiducials("image_ras", f"{prefix} nodules (image)")
    for it in items:
        if it.get("roi_center_ras") is None:
            continue
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{prefix} {it['name']} box")
        if hasattr(roi, "CreateDefaultDisplayNodes"):
            roi.CreateDefaultDisplayNodes()
        matrix = roi.GetObjectToNodeMatrix()
        oriented = type(matrix)()  # a vtkMatrix4x4 without importing vtk
        axes = np.asarray(it["roi_axes_ras"], dtype=np.float64)
        centre = np.asarray(it["roi_center_ras"], dtype=np.float64)
        for r in range(3):
            for c in range(3):
                oriented.SetElement(r, c, float(axes[r, c]))
            oriented.SetElement(r, 3, float(centre[r]))
        roi.SetAndObserveObjectToNodeMatrix(oriented)
        roi.SetCenter(*centre.tolist())
        roi.SetSize(*[float(s) for s in it["roi_size_mm"]])
        desc = {k: it[k] for k in ("category", "diameter_mm", "visibility")}
        roi.SetAttribute(RESULT_ATTRIBUTE + ".label", json.dumps(desc))
        out["rois"].append(roi)
    return out


def stored_result(node) -> Optional[Dict[str, Any]]:
    """The result JSON stored on a volume node made by :func:`load_result_volume` (without nodule labels)."""
    text = node.GetAttribute(RESULT_ATTRIBUTE) if node is not None else None
    return json.loads(text) if text else None


def volume_geometry(node) -> Dict[str, List[float]]:
    """Spacing, origin and IJK->RAS directions of a volume node (for checks and logs)."""
    d = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(d)
    return {"spacing": list(node.GetSpacing()), "origin": list(node.GetOrigin()), "directions": d}
