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
    path.write_bytes(("\n".join(lines) + "\n\n").encode()
                     + np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
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


# ----------------------------------------------------------------------------------------------------------------
# film placement for real geometries (dxr_core's own cone-beam geometry): PA, AP, lateral, oblique
# ----------------------------------------------------------------------------------------------------------------
ROWS, COLS = 6, 8  # not square, so a swapped axis shows

GEOMETRIES = {  # name: (view, rotation in degrees about the patient's long axis)
    "pa": ("pa", 0.0), "ap": ("ap", 0.0), "lateral": ("lateral", 0.0), "oblique": ("pa", 35.0),
}


def _geometry_result(name, rows=ROWS, cols=COLS, spacing=(1.25, 0.75)):
    from dxr_core.drr.geometry import make_geometry

    view, rotation = GEOMETRIES[name]
    g = make_geometry(None, view=view, size=(rows, cols), pixel_spacing_mm=spacing, rotation_deg=rotation,
                      isocenter_lps=np.array([12.0, -30.0, 140.0]))
    gd = g.to_dict()
    return {"task": "drr", "image": {"size": [rows, cols], "pixel_spacing_mm": list(spacing), "dtype": "float32"},
            "geometry": gd, "projection_matrix": gd["projection_matrix"], "nodules": []}


def _check_film(node, result):
    """Every pixel of the loaded film sits where its ray hit the detector: IJK -> RAS -> LPS projects back onto
    (col, row) with the result's own projection matrix; the stored RAS projection matrix agrees."""
    from DiffusionXRayLib import node_projection_matrix, project_lps, ras_to_lps

    rows, cols = result["image"]["size"]
    m = _ijk_to_ras(node)
    cr = np.array([[0, 0], [cols - 1, 0], [0, rows - 1], [cols - 1, rows - 1], [3, 2]], dtype=float)
    ras = (m @ np.c_[cr, np.zeros(len(cr)), np.ones(len(cr))].T).T[:, :3]
    np.testing.assert_allclose(project_lps(result["projection_matrix"], ras_to_lps(ras)), cr, atol=1e-6)
    p_ras = node_projection_matrix(node, "RAS")
    h = np.c_[ras, np.ones(len(ras))] @ p_ras.T
    np.testing.assert_allclose(h[:, :2] / h[:, 2:], cr, atol=1e-6)
    # a right-handed frame with the film's normal as k (1 mm)
    np.testing.assert_allclose(m[:3, 2], np.cross(m[:3, 0], m[:3, 1]) / np.linalg.norm(np.cross(m[:3, 0], m[:3, 1])),
                               atol=1e-9)


def _film_file(tmp_path, name, rows=ROWS, cols=COLS, offset=0.0, spacing=(0.75, 1.25)):
    img = (np.linspace(0, 1, rows * cols, dtype=np.float32).reshape(rows, cols) + offset) / (1 + offset)
    return _write_nrrd(tmp_path / name, img, spacing), img


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_film_placement_for_each_geometry(scene, tmp_path, name):
    from DiffusionXRayLib import load_result_volume

    result = _geometry_result(name)
    path, img = _film_file(tmp_path, "drr.nrrd")
    node = load_result_volume(scene, str(path), result, f"DRR {name}")
    _check_film(node, result)
    np.testing.assert_array_equal(_array(node)[0], img)
    d = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(d)
    if name not in ("pa", "ap"):  # PA/AP directions are symmetric (see test_transposed_directions_are_caught)
        assert not np.allclose(np.asarray(d), np.asarray(d).T)


def test_transposed_directions_are_caught(scene, tmp_path, monkeypatch):
    """The checks above fail when the loader transposes the IJK -> RAS directions (every non-symmetric geometry).
    PA's and AP's direction matrix in RAS (both films are read with the patient's right on the viewer's left),
    [[-1,0,0],[0,0,-1],[0,-1,0]], is its own transpose: transposing it changes nothing, so for them no test can tell
    (and no such bug can show); their films still differ in origin and projection, which _check_film checks."""
    import DiffusionXRayLib.scene as scene_mod
    from DiffusionXRayLib import load_result_volume

    real = scene_mod.split_ijk_to_ras

    def transposed(m):
        spacing, directions, origin = real(m)
        return spacing, directions.T.copy(), origin

    monkeypatch.setattr(scene_mod, "split_ijk_to_ras", transposed)
    path, _img = _film_file(tmp_path, "drr.nrrd")
    for name in ("lateral", "oblique"):
        result = _geometry_result(name)
        node = load_result_volume(scene, str(path), result, f"bad {name}")
        with pytest.raises(AssertionError):
            _check_film(node, result)
    for name in ("pa", "ap"):
        res = _geometry_result(name)
        _check_film(load_result_volume(scene, str(path), res, name), res)  # symmetric: identical placement


def test_two_results_in_one_folder_load_as_two_films(scene, tmp_path):
    """Sibling 2-D files with numbered names must not be merged into one volume by the archetype reader."""
    from DiffusionXRayLib import load_result_volume

    a_path, a = _film_file(tmp_path, "dxr-result-1.nrrd")
    b_path, b = _film_file(tmp_path, "dxr-result-2.nrrd", offset=1.0)
    ra, rb = _geometry_result("lateral"), _geometry_result("oblique")
    na = load_result_volume(scene, str(a_path), ra, "first")
    nb = load_result_volume(scene, str(b_path), rb, "second")
    for node, img, res in ((na, a, ra), (nb, b, rb)):
        assert node.GetImageData().GetDimensions() == (COLS, ROWS, 1)
        np.testing.assert_array_equal(_array(node)[0], img)
        _check_film(node, res)
    assert na.GetName() == "first" and nb.GetName() == "second"


def test_result_size_is_checked(scene, tmp_path):
    from DiffusionXRayLib import load_result_volume

    path, _ = _film_file(tmp_path, "drr.nrrd")
    n = scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="inconsistent"):
        load_result_volume(scene, str(path), _geometry_result("ap", rows=COLS, cols=ROWS), "wrong")
    assert scene.GetNumberOfNodes() == n  # nothing left behind


def test_parent_transform_is_hardened_on_a_copy(scene, tmp_path, slicer_core):
    """A CT under a (non-symmetric) linear transform is sent in world coordinates; the node and its transform are
    untouched, and placed points are read in world coordinates too."""
    from DiffusionXRayLib import markups_points_lps, snapshot_volume

    hu = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    ct = _read_node(scene, _write_nrrd(tmp_path / "ct.nrrd", hu, (0.7, 0.8, 2.5), origin_lps=(-100.0, 50.0, 20.0)),
                    "CT")
    before = _ijk_to_ras(ct)
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    c, s = np.cos(0.4), np.sin(0.4)
    to_parent = np.array([[c, -s, 0, 10.0], [s, c, 0, -20.0], [0, 0, 1, 5.0], [0, 0, 0, 1]])
    import vtk

    vm = vtk.vtkMatrix4x4()
    for r in range(4):
        for k in range(4):
            vm.SetElement(r, k, to_parent[r, k])
    t.SetMatrixTransformToParent(vm)
    ct.SetAndObserveTransformNodeID(t.GetID())
    n_nodes = scene.GetNumberOfNodes()
    snap = snapshot_volume(scene, ct)
    assert scene.GetNumberOfNodes() == n_nodes
    expected_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ to_parent @ before
    np.testing.assert_allclose(snap.ijk_to_lps, expected_lps, atol=1e-9)
    assert not np.allclose(snap.ijk_to_lps[:3, :3], snap.ijk_to_lps[:3, :3].T)  # a transposition would show
    np.testing.assert_array_equal(snap.array, hu)
    np.testing.assert_allclose(_ijk_to_ras(ct), before)  # the node itself is not hardened
    assert ct.GetTransformNodeID() == t.GetID()

    pts = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    pts.AddControlPoint([1.0, 2.0, 3.0])
    pts.SetAndObserveTransformNodeID(t.GetID())
    world = to_parent @ np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(markups_points_lps(pts)[0], [-world[0], -world[1], world[2]], atol=1e-9)

    # the file written for the server places the voxels where the world matrix says (read back through MRML)
    from DiffusionXRayLib import write_nrrd

    out = write_nrrd(str(tmp_path / "sent.nrrd"), snap.array, snap.ijk_to_lps)
    back = _read_node(scene, Path(out), "sent")
    np.testing.assert_allclose(_ijk_to_ras(back), to_parent @ before, atol=1e-6)
    np.testing.assert_array_equal(_array(back), hu)


def test_nodule_masks_become_a_segmentation_on_the_film(scene, tmp_path, slicer_core):
    from DiffusionXRayLib import add_nodule_segmentation, load_result_volume
    from dxr_core.nodules.labels import rle_encode

    result = _geometry_result("oblique")
    masks = [np.zeros((ROWS, COLS), np.uint8) for _ in range(2)]
    masks[0][1:3, 2:5] = 1
    masks[1][4, 6] = 1
    result["nodules"] = [{"category": "solid", "segmentation": rle_encode(m.astype(bool))} for m in masks]
    path, _ = _film_file(tmp_path, "drr.nrrd")
    film = load_result_volume(scene, str(path), result, "film")
    seg = add_nodule_segmentation(scene, result, film)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    rep = slicer_core.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    from vtkmodules.util.numpy_support import vtk_to_numpy

    import vtk

    for i, mask in enumerate(masks):
        segment = segmentation.GetNthSegment(i)
        assert segment.GetName() == f"N{i + 1} solid"
        lm = segment.GetRepresentation(rep)
        ext = lm.GetExtent()
        arr = vtk_to_numpy(lm.GetPointData().GetScalars()).reshape(ext[5] - ext[4] + 1, ext[3] - ext[2] + 1,
                                                                  ext[1] - ext[0] + 1)
        full = np.zeros((ROWS, COLS), np.uint8)
        full[ext[2]:ext[3] + 1, ext[0]:ext[1] + 1] = arr[0]
        np.testing.assert_array_equal(full, mask)
        m = vtk.vtkMatrix4x4()
        lm.GetImageToWorldMatrix(m)
        np.testing.assert_allclose([[m.GetElement(r, k) for k in range(4)] for r in range(4)], _ijk_to_ras(film),
                                   atol=1e-9)
    assert add_nodule_segmentation(scene, {"nodules": []}, film) is None


def test_enhanced_radiograph_keeps_the_input_plane():
    from DiffusionXRayLib import enhanced_ijk_to_ras

    m = np.array([[0.0, 0.5, 0, 10], [-0.4, 0, 0, 20], [0, 0, 1, 30], [0, 0, 0, 1]])  # oblique in-plane axes
    out = enhanced_ijk_to_ras(m, (10, 8), (20, 16))
    corner = lambda mat, i, j: (mat @ [i, j, 0, 1])[:3]  # noqa: E731
    np.testing.assert_allclose(corner(out, -0.5, -0.5), corner(m, -0.5, -0.5))
    np.testing.assert_allclose(corner(out, 19.5, 15.5), corner(m, 9.5, 7.5))
    np.testing.assert_allclose(out[:3, :2], m[:3, :2] / 2)


def test_non_linear_parent_transform_is_hardened_on_a_temporary_copy(scene, slicer_core, monkeypatch):
    """A non-linear (thin-plate spline) parent transform is hardened on a copy (resampled by Slicer's transform
    logic); the copy is removed, the node keeps its transform, and the sent volume sits where it is shown."""
    import vtk

    from DiffusionXRayLib import snapshot_volume

    monkeypatch.setattr(slicer_core, "mrmlScene", scene, raising=False)  # addVolumeFromArray adds to it
    hu = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    ct = slicer_core.util.addVolumeFromArray(hu, ijkToRAS=np.diag([2.0, 2.0, 2.0, 1.0]), name="CT")
    t = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    tps = vtk.vtkThinPlateSplineTransform()
    src, dst = vtk.vtkPoints(), vtk.vtkPoints()
    for p in [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10), (10, 10, 10)]:
        src.InsertNextPoint(*p)
        dst.InsertNextPoint(p[0] + 1.5, p[1], p[2])  # a shift of 1.5 mm to the right, given as a non-linear warp
    tps.SetSourceLandmarks(src)
    tps.SetTargetLandmarks(dst)
    tps.SetBasisToR()
    t.SetAndObserveTransformToParent(tps)
    ct.SetAndObserveTransformNodeID(t.GetID())
    assert not t.IsTransformToWorldLinear()
    n_nodes = scene.GetNumberOfNodes()
    snap = snapshot_volume(scene, ct)
    assert scene.GetNumberOfNodes() == n_nodes and ct.GetTransformNodeID() == t.GetID()
    np.testing.assert_allclose(_ijk_to_ras(ct), np.diag([2.0, 2.0, 2.0, 1.0]))  # the node is untouched
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ snap.ijk_to_lps
    # the voxels' world position: where the warp moved them (1.5 mm to the right)
    world_of_first = ras @ [0, 0, 0, 1]
    np.testing.assert_allclose(world_of_first[:3], [1.5, 0.0, 0.0], atol=0.2)
    np.testing.assert_allclose(snap.array, hu, atol=1e-3 * hu.max())
