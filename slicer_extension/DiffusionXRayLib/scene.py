"""MRML glue: CT volume node -> temporary NRRD, result NRRD + JSON -> volume node and nodule markups.

Works on any ``vtkMRMLScene`` passed in (Slicer's ``slicer.mrmlScene`` in the application, a bare scene from PyPI
``slicer-core`` in tests). Nodes are created through the scene (``AddNewNodeByClass``); ``vtk`` (and ``slicer`` for
the transform logic and segmentation classes) are imported inside the functions that need them, so the pure parts of
the package import without either. All of it runs on the main thread (MRML is not thread-safe).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from .geometry import nodule_markups, result_ijk_to_ras, split_ijk_to_ras

RESULT_ATTRIBUTE = "DiffusionXRay.result"
PROJECTION_LPS_ATTRIBUTE = "DiffusionXRay.projectionMatrixLPS"  # 12 numbers, row-major 3x4: LPS mm -> w*[col,row,1]
PROJECTION_RAS_ATTRIBUTE = "DiffusionXRay.projectionMatrixRAS"  # the same for RAS points


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


def load_result_volume(scene, image_path: str, result: Dict[str, Any], name: str = "DRR", ijk_to_ras=None):
    """Read the result NRRD into a new scalar volume node placed by :func:`result_ijk_to_ras` (on the DRR's detector
    plane, right spacing) or by ``ijk_to_ras`` when given, with a [0, 1] (or uint16) window and the result JSON in
    the node attribute ``DiffusionXRay.result``; the 3x4 projection matrix (LPS and RAS) in
    ``DiffusionXRay.projectionMatrixLPS`` / ``DiffusionXRay.projectionMatrixRAS``.

    The file is read as a single file (Slicer's archetype reader would otherwise merge sibling 2-D files of the
    same folder into one volume) and its size is checked against the result JSON."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = _storage(scene)
    try:
        storage.SetFileName(image_path)
        storage.SetSingleFile(1)
        if not storage.ReadData(node) or node.GetImageData() is None:
            scene.RemoveNode(node)
            raise RuntimeError(f"Could not read the server's result image {os.path.basename(image_path)!r}; "
                               "run the request again.")
    finally:
        scene.RemoveNode(storage)  # the file is temporary: saving the scene must ask for a new place
    dims = tuple(node.GetImageData().GetDimensions())
    want = (result.get("image") or {}).get("size")
    if want is not None and (dims[2] != 1 or (dims[1], dims[0]) != (int(want[0]), int(want[1]))):
        scene.RemoveNode(node)
        raise RuntimeError(f"The server's result image is {dims[0]} x {dims[1]} x {dims[2]} voxels but its JSON says "
                           f"{want[1]} x {want[0]} pixels; the answer is inconsistent, run the request again.")
    m = result_ijk_to_ras(result) if ijk_to_ras is None else np.asarray(ijk_to_ras, dtype=np.float64)
    spacing, directions, origin = split_ijk_to_ras(m)
    node.SetSpacing(*spacing.tolist())
    node.SetOrigin(*origin.tolist())
    node.SetIJKToRASDirections(*directions.ravel().tolist())
    slim = {k: v for k, v in result.items() if k != "nodules"}
    slim["nodule_count"] = len(result.get("nodules") or [])
    node.SetAttribute(RESULT_ATTRIBUTE, json.dumps(slim))
    pm = result.get("projection_matrix")
    if pm is not None:
        p = np.asarray(pm, dtype=np.float64).reshape(3, 4)
        node.SetAttribute(PROJECTION_LPS_ATTRIBUTE, " ".join(f"{v:.12g}" for v in p.ravel()))
        node.SetAttribute(PROJECTION_RAS_ATTRIBUTE, " ".join(f"{v:.12g}" for v in projection_ras(p).ravel()))
    if hasattr(node, "CreateDefaultDisplayNodes"):
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and hasattr(display, "SetWindowLevelMinMax"):
        hi = 65535.0 if (result.get("image") or {}).get("dtype") == "uint16" else 1.0
        display.SetAutoWindowLevel(0)
        display.SetWindowLevelMinMax(0.0, hi)
    return node


def projection_ras(projection_lps) -> np.ndarray:
    """The 3x4 projection matrix for RAS points: ``P_ras @ [r, a, s, 1] = w * [col, row, 1]``."""
    return np.asarray(projection_lps, dtype=np.float64).reshape(3, 4) @ np.diag([-1.0, -1.0, 1.0, 1.0])


def node_projection_matrix(node, frame: str = "RAS") -> Optional[np.ndarray]:
    """The 3x4 projection matrix stored on a result volume node (``frame`` "RAS" or "LPS"), or None."""
    text = node.GetAttribute(PROJECTION_RAS_ATTRIBUTE if frame.upper() == "RAS" else PROJECTION_LPS_ATTRIBUTE)
    return np.array([float(v) for v in text.split()]).reshape(3, 4) if text else None


def ijk_to_ras_of(node) -> np.ndarray:
    """4x4 IJK -> RAS of a volume node in its own (parent) frame."""
    d = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(d)
    m = np.eye(4)
    m[:3, :3] = np.asarray(d) * np.asarray(node.GetSpacing())[None, :]
    m[:3, 3] = node.GetOrigin()
    return m


def _array_of(node) -> np.ndarray:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    img = node.GetImageData()
    dims = img.GetDimensions()
    comps = img.GetNumberOfScalarComponents()
    arr = vtk_to_numpy(img.GetPointData().GetScalars())
    if comps != 1:
        raise RuntimeError("The selected volume has more than one component per voxel (a colour image?); select a "
                           "greyscale CT or radiograph.")
    return arr.reshape(dims[2], dims[1], dims[0])


def _matrix_to_numpy(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_world_ijk_to_ras(scene, node):
    """(IJK -> world RAS 4x4, hardened copy or None): a linear parent transform is composed; any other (non-linear)
    is hardened on a temporary copy of the node, which the caller removes after taking what it needs."""
    parent = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    m = ijk_to_ras_of(node)
    if parent is None:
        return m, None
    if parent.IsTransformToWorldLinear():
        import vtk

        mat = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(mat)
        return _matrix_to_numpy(mat) @ m, None
    copy = harden_copy(scene, node)
    return ijk_to_ras_of(copy), copy


def harden_copy(scene, node):
    """A copy of ``node`` under the same parent transform, with the transform hardened (resampled if non-linear);
    the original and its transform are left untouched."""
    import vtk

    copy = scene.AddNewNodeByClass(node.GetClassName(), (node.GetName() or "volume") + " (world)")
    image = vtk.vtkImageData()
    image.DeepCopy(node.GetImageData())
    copy.SetAndObserveImageData(image)
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    copy.SetIJKToRASMatrix(m)
    copy.SetAndObserveTransformNodeID(node.GetTransformNodeID())
    _transform_logic().hardenTransform(copy)
    return copy


def _transform_logic():
    import slicer

    return slicer.vtkSlicerTransformLogic()


def version_key(node, ijk_to_ras_world) -> tuple:
    """What identifies the version of a volume node that was sent: id, modification times, world matrix."""
    image = node.GetImageData()
    return (node.GetID(), int(node.GetMTime()), int(image.GetMTime()) if image is not None else 0,
            tuple(np.round(np.asarray(ijk_to_ras_world, dtype=np.float64).ravel(), 9).tolist()))


def snapshot_volume(scene, node, cache=None):
    """A :class:`VolumeSnapshot` of a CT (or 2-D radiograph) volume node for the worker thread: a copy of its voxels
    and IJK -> LPS in world coordinates (parent transforms hardened on a copy, the copy removed again).

    With ``cache`` (a ``CTFileCache``) holding a file for this version of the node, no voxels are copied (the
    snapshot's ``array`` is None): a second request on an unchanged CT costs nothing on the main thread."""
    from .geometry import LPS_TO_RAS_4
    from .tasks import VolumeSnapshot

    if node is None or node.GetImageData() is None:
        raise RuntimeError("The selected volume has no image data; load a CT (or a radiograph) first.")
    parent = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if cache is not None and (parent is None or parent.IsTransformToWorldLinear()):
        m, _none = volume_world_ijk_to_ras(scene, node)  # linear: no copy, no resampling
        key = version_key(node, m)
        if cache.entry(node.GetID(), key) is not None:
            dims = node.GetImageData().GetDimensions()
            return VolumeSnapshot(node.GetID(), node.GetName(), None, LPS_TO_RAS_4 @ m, key=key,
                                  kind="radiograph" if dims[2] == 1 else "ct")
    m, copy = volume_world_ijk_to_ras(scene, node)
    try:
        source = copy if copy is not None else node
        arr = _array_of(source).copy()
    finally:
        if copy is not None:
            scene.RemoveNode(copy)
    return VolumeSnapshot(node.GetID(), node.GetName(), arr, LPS_TO_RAS_4 @ m, key=version_key(node, m))


def enhanced_ijk_to_ras(input_ijk_to_ras, input_size_xy, output_size_xy) -> np.ndarray:
    """Placement of an enhanced (super-resolved) radiograph on the plane of the 2-D input it came from: same
    corners, finer pixels. Sizes are (columns, rows)."""
    m = np.asarray(input_ijk_to_ras, dtype=np.float64).copy()
    out = m.copy()
    for axis in (0, 1):
        factor = float(input_size_xy[axis]) / float(output_size_xy[axis])
        out[:3, axis] = m[:3, axis] * factor
        # pixel centres: the input's first pixel covers [-0.5, 0.5); the output's first centre sits half an output
        # pixel inside that edge
        out[:3, 3] += -0.5 * m[:3, axis] + 0.5 * out[:3, axis]
    return out


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


# ----------------------------------------------------------------------------------------------------------------
# nodule masks, placed points, matched labels
# ----------------------------------------------------------------------------------------------------------------
def rle_decode(rle: Dict[str, Any]) -> np.ndarray:
    """COCO uncompressed RLE ({"size": [rows, cols], "counts": [...]}, column-major, background run first) -> a
    (rows, cols) uint8 mask."""
    rows, cols = (int(v) for v in rle["size"])
    flat = np.zeros(rows * cols, dtype=np.uint8)
    pos, value = 0, 0
    for count in rle["counts"]:
        count = int(count)
        if value:
            flat[pos:pos + count] = 1
        pos += count
        value ^= 1
    return flat.reshape(cols, rows).T


NODULE_COLOURS = [(0.95, 0.35, 0.2), (0.2, 0.75, 0.95), (0.95, 0.85, 0.2), (0.6, 0.35, 0.95), (0.3, 0.9, 0.4),
                  (0.95, 0.4, 0.75)]


def add_nodule_segmentation(scene, result: Dict[str, Any], volume_node, name: Optional[str] = None,
                            segment_names: Optional[List[str]] = None):
    """The exact projected nodule masks of a result (``segmentation`` RLE of each label) as one segmentation node on
    the placed film: one segment per nodule, its binary labelmap on the film's own grid. None without masks."""
    import vtk
    from vtkmodules.util.numpy_support import numpy_to_vtk

    import slicer

    labels = [lab for lab in (result.get("nodules") or [])]
    if not any(lab.get("segmentation") for lab in labels):
        return None
    dims = volume_node.GetImageData().GetDimensions()
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{volume_node.GetName()} nodule masks")
    if hasattr(seg_node, "CreateDefaultDisplayNodes"):
        seg_node.CreateDefaultDisplayNodes()
    seg_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = seg_node.GetSegmentation()
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    rep = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(rep) if hasattr(segmentation, "SetSourceRepresentationName") else \
        segmentation.SetMasterRepresentationName(rep)
    for i, lab in enumerate(labels):
        rle = lab.get("segmentation")
        if not rle:
            continue
        mask = rle_decode(rle)
        if mask.shape != (dims[1], dims[0]):
            raise RuntimeError(f"Nodule mask {i + 1} is {mask.shape[1]} x {mask.shape[0]} pixels but the film is "
                               f"{dims[0]} x {dims[1]}; the answer is inconsistent, run the request again.")
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(dims[0], dims[1], 1)
        image.SetImageToWorldMatrix(m)
        scalars = numpy_to_vtk(np.ascontiguousarray(mask).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
        image.GetPointData().SetScalars(scalars)
        seg_name = (segment_names[i] if segment_names and i < len(segment_names) else None) or \
            f"N{i + 1} {lab.get('category') or 'nodule'}"
        segment = slicer.vtkSegment()
        segment.SetName(seg_name)
        segment.SetColor(*NODULE_COLOURS[i % len(NODULE_COLOURS)])
        segment.AddRepresentation(rep, image)
        segmentation.AddSegment(segment, f"nodule_{i + 1}")
        segment.SetTag("DiffusionXRay.label", json.dumps({k: lab.get(k) for k in ("category", "diameter_mm",
                                                                                   "visibility", "bbox")}))
    return seg_node


def markups_points_lps(markups_node) -> List[List[float]]:
    """World positions of a markups point list's control points, in LPS (what ``nodule_points`` expects): parent
    transforms of the markups node are applied."""
    out = []
    if markups_node is None:
        return out
    for i in range(markups_node.GetNumberOfControlPoints()):
        p = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(i, p)
        out.append([-p[0], -p[1], p[2]])
    return out


def label_matched_points(markups_node, result: Dict[str, Any], matches: Dict[int, int]) -> None:
    """Write each clicked point's matched result label into the point's description (kind, diameter, visibility),
    and the whole match as the node attribute ``DiffusionXRay.matches`` ({point index: label index})."""
    labels = result.get("nodules") or []
    for i, j in matches.items():
        lab = labels[j]
        vis = lab.get("visibility")
        text = f"{lab.get('category') or 'nodule'} {float(lab.get('diameter_mm') or 0):.1f} mm"
        if vis is not None:
            text += f", visibility (CNR) {float(vis):.2f}"
        if lab.get("in_image") is False:
            text += ", outside the image"
        markups_node.SetNthControlPointDescription(i, text)
    markups_node.SetAttribute(RESULT_ATTRIBUTE + ".matches", json.dumps({str(k): v for k, v in matches.items()}))
