"""The MRML layer of the Slicer module (DiffusionXRayLib.scene) on a real vtkMRMLScene from PyPI `slicer-core`
(Slicer's Qt-free MRML libraries). Skipped, with the reason, where `slicer-core` is not installed.

The NRRD files are written by hand (no SimpleITK needed), as the server writes them: a CT in LPS, and a 2-D float32
radiograph with its pixel spacing.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "slicer_extension"))


def _slicer_core():
    try:
        import slicer
    except ImportError:
        slicer = None
    if slicer is None or not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("PyPI slicer-core (Qt-free MRML) is not installed; `pip install slicer-core==5.13.31053.0`")
    return slicer


@pytest.fixture(scope="module")
def slicer_core():
    return _slicer_core()


@pytest.fixture()
def scene(slicer_core):
    return slicer_core.vtkMRMLScene()


def _write_nrrd(path: Path, arr: np.ndarray, spacing, origin_lps=None, directions=None) -> Path:
    """Minimal raw NRRD writer: arr (z, y, x) or (y, x) float32/int16, spacing (x, y[, z])."""
    kinds = {np.dtype("float32"): "float", np.dtype("int16"): "short"}
    lines = ["NRRD0004", f"type: {kinds[arr.dtype]}", f"dimension: {arr.ndim}",
             "sizes: " + " ".join(str(s) for s in arr.shape[::-1]), "endian: little", "encoding: raw"]
    if origin_lps is None:
        lines.append("spacings: " + " ".join(f"{s:.17g}" for s in spacing))
    else:
        d = np.eye(3) if directions is None else np.asarray(directions)
        lines.append("space: left-posterior-superior")
        lines.append("space directions: " + " ".join(
            "(" + ",".join(f"{v:.17g}" for v in d[:, i] * spacing[i]) + ")" for i in range(3)))
        lines.append("space origin: (" + ",".join(f"{v:.17g}" for v in origin_lps) + ")")
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    return path


def _array(node) -> np.ndarray:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    img = node.GetImageData()
    dims = img.GetDimensions()
    return vtk_to_numpy(img.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def _read_node(scene, path: Path, name="v"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    scene.RemoveNode(storage)
    return node


def _ijk_to_ras(node) -> np.ndarray:
    m = np.eye(4)
    d = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(d)
    m[:3, :3] = np.asarray(d) * np.asarray(node.GetSpacing())[None, :]
    m[:3, 3] = node.GetOrigin()
    return m


# ----------------------------------------------------------------------------------------------------------------
def test_ct_node_is_written_in_lps_for_the_server(scene, tmp_path):
    from DiffusionXRayLib import write_volume_node

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, size=(6, 5, 4)).astype(np.int16)
    src = _write_nrrd(tmp_path / "ct_in.nrrd", hu, (0.7, 0.8, 2.5), origin_lps=(-100.0, 50.0, 20.0))
    ct = _read_node(scene, src, "CT")
    # Slicer holds it in RAS: x and y flipped
    np.testing.assert_allclose(ct.GetOrigin(), (100.0, -50.0, 20.0))
    n_nodes = scene.GetNumberOfNodes()
    out = write_volume_node(scene, ct, str(tmp_path / "upload.nrrd"), compress=False)
    assert scene.GetNumberOfNodes() == n_nodes  # the temporary storage node is gone
    header = Path(out).read_bytes().split(b"\n\n", 1)[0].decode()
    assert "space: left-posterior-superior" in header
    origin = re.search(r"space origin:\s*\(([^)]*)\)", header).group(1)
    np.testing.assert_allclose([float(v) for v in origin.split(",")], (-100.0, 50.0, 20.0), atol=1e-9)
    back = _read_node(scene, Path(out), "back")
    np.testing.assert_array_equal(_array(back), hu)
    np.testing.assert_allclose(_ijk_to_ras(back), _ijk_to_ras(ct))
    with pytest.raises(RuntimeError, match="no image data"):
        write_volume_node(scene, scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"), str(tmp_path / "x.nrrd"))


def _result(rows=6, cols=8):
    geometry = {"detector_origin_lps": [-30.0, 520.0, 40.0], "row_direction": [1.0, 0.0, 0.0],
                "col_direction": [0.0, 0.0, -1.0], "pixel_spacing_mm": [1.25, 0.75], "size": [rows, cols],
                "source_lps": [0.0, -1000.0, 0.0]}
    return {"task": "drr", "image": {"size": [rows, cols], "pixel_spacing_mm": [1.25, 0.75], "dtype": "float32"},
            "geometry": geometry, "projection_matrix": np.eye(3, 4).tolist(),
            "nodules": [{"category": "solid", "centre_lps": [5.0, 10.0, -15.0], "centre_px": [3.0, 2.0],
                         "bbox": [2, 1, 3, 3], "diameter_mm": 9.0, "visibility": 2.5}]}


def test_result_volume_is_placed_with_its_spacing(scene, tmp_path):
    from DiffusionXRayLib import result_ijk_to_ras, stored_result
    from DiffusionXRayLib.scene import load_result_volume

    rows, cols = 6, 8
    img = np.linspace(0, 1, rows * cols, dtype=np.float32).reshape(rows, cols)
    path = _write_nrrd(tmp_path / "drr.nrrd", img, (0.75, 1.25))  # as the server writes it: spacing only
    result = _result(rows, cols)
    node = load_result_volume(scene, str(path), result, "DRR test")
    assert node.GetName() == "DRR test"
    assert node.GetImageData().GetDimensions() == (cols, rows, 1)
    np.testing.assert_allclose(node.GetSpacing(), (0.75, 1.25, 1.0))
    np.testing.assert_allclose(_ijk_to_ras(node), result_ijk_to_ras(result), atol=1e-12)
    # pixel (row 0, col 0) is at the detector origin, in RAS
    np.testing.assert_allclose(node.GetOrigin(), (30.0, -520.0, 40.0))
    np.testing.assert_array_equal(_array(node)[0], img)
    display = node.GetDisplayNode()
    assert display is not None and (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    stored = stored_result(node)
    assert stored["geometry"] == json.loads(json.dumps(result["geometry"])) and stored["nodule_count"] == 1
    assert "nodules" not in stored
    assert not list(node.GetStorageNodeIDs() if hasattr(node, "GetStorageNodeIDs") else [])


def test_nodule_markups(scene):
    from DiffusionXRayLib.scene import add_nodule_markups

    result = _result()
    out = add_nodule_markups(scene, result, prefix="DRR")
    centres, on_image, (roi,) = out["centres"], out["image_points"], out["rois"]
    assert centres.GetName() == "DRR nodules (CT)" and centres.GetNumberOfControlPoints() == 1
    assert centres.GetNthControlPointLabel(0) == "N1 solid"
    np.testing.assert_allclose(centres.GetNthControlPointPosition(0), (-5.0, -10.0, -15.0))
    # centre_px (col 3, row 2) on the detector: LPS (-30 + 3 * 0.75, 520, 40 - 2 * 1.25)
    np.testing.assert_allclose(on_image.GetNthControlPointPosition(0), (30.0 - 2.25, -520.0, 37.5))
    # box cols [2, 5) rows [1, 4): centre pixel (3, 2), 2.25 x 3.75 mm, oriented with the film
    np.testing.assert_allclose(roi.GetCenter(), on_image.GetNthControlPointPosition(0), atol=1e-5)
    np.testing.assert_allclose(roi.GetSize(), (2.25, 3.75, 1.0), atol=1e-6)
    axes = [[0.0] * 3 for _ in range(3)]
    roi.GetXAxis(axes[0]), roi.GetYAxis(axes[1]), roi.GetZAxis(axes[2])
    np.testing.assert_allclose(axes[0], (-1.0, 0.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(axes[1], (0.0, 0.0, -1.0), atol=1e-12)
    assert json.loads(roi.GetAttribute("DiffusionXRay.result.label"))["category"] == "solid"
    assert add_nodule_markups(scene, dict(result, nodules=[])) == {"centres": None, "image_points": None, "rois": []}
