"""The Slicer extension without Slicer: the module file's structure (ast), the extension's CMake files, and the pure
parts of DiffusionXRayLib (multipart encoding/decoding, error sentences, LPS <-> RAS placement)."""
from __future__ import annotations

import ast
import importlib
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "slicer_extension"
MODULE = EXT / "DiffusionXRay.py"
LIB = EXT / "DiffusionXRayLib"
SLICER_PYTHON = (3, 9)  # Slicer 5.x embeds Python 3.9: the module must parse there

sys.path.insert(0, str(EXT))
from DiffusionXRayLib import (  # noqa: E402
    decode_multipart,
    encode_multipart,
    error_detail,
    lps_to_ras,
    nodule_markups,
    result_ijk_to_ras,
    split_ijk_to_ras,
    upload_name,
)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path), feature_version=SLICER_PYTHON)


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> set[str]:
    return {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}


# ----------------------------------------------------------------------------------------------------------------
# module file as Slicer loads it
# ----------------------------------------------------------------------------------------------------------------
def test_module_classes_follow_the_scripted_module_pattern():
    classes = _classes(_tree(MODULE))
    expected = {
        "DiffusionXRay": "ScriptedLoadableModule",
        "DiffusionXRayWidget": "ScriptedLoadableModuleWidget",
        "DiffusionXRayLogic": "ScriptedLoadableModuleLogic",
        "DiffusionXRayTest": "ScriptedLoadableModuleTest",
    }
    for name, base in expected.items():
        assert name in classes, f"{MODULE.name} lacks class {name}"
        assert [b.id for b in classes[name].bases if isinstance(b, ast.Name)] == [base], name
    assert {"setup", "cleanup", "onGenerate", "onConnect"} <= _methods(classes["DiffusionXRayWidget"])
    assert {"generate", "parameters", "show", "client"} <= _methods(classes["DiffusionXRayLogic"])
    assert {"setUp", "runTest"} <= _methods(classes["DiffusionXRayTest"])
    # the module's name is the file's name, as Slicer requires
    assert MODULE.stem == "DiffusionXRay"


def test_module_sets_its_metadata_and_widgets():
    src = MODULE.read_text()
    for attr in ("title", "categories", "dependencies", "contributors", "helpText", "acknowledgementText"):
        assert re.search(rf"self\.parent\.{attr}\s*=", src), attr
    for text in ('"Generate enhanced DRR"', '"Generate DRR"', "qMRMLNodeComboBox", "vtkMRMLScalarVolumeNode"):
        assert text in src, text
    for widget in ("serverUrlEdit", "ctSelector", "viewCombo", "sizeSpin", "kvpSpin", "noduleSpin", "samplerCombo",
                   "stepsSpin"):
        assert f"self.{widget} =" in src, widget


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_lib_is_pure_python_and_parses_on_slicer_python():
    files = sorted(LIB.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "client.py", "geometry.py", "scene.py"}
    for f in files:
        imported = _imports(_tree(f))
        assert not imported & {"slicer", "qt", "ctk", "vtk", "vtkmodules", "requests"}, (f.name, imported)
        assert imported <= set(sys.stdlib_module_names) | {"numpy", "__future__"}, (f.name, imported)


def _stub_slicer(monkeypatch):
    """Minimal stand-ins for Slicer's Python modules, enough to import the module file and run its pure parts."""
    sl = types.ModuleType("slicer")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class _Base:
        def __init__(self, parent=None):
            self.parent = parent

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"):
        setattr(slm, name, type(name, (_Base,), {}))
    sl.ScriptedLoadableModule = slm
    qt = types.ModuleType("qt")

    class QSettings:
        def value(self, key, default=None):
            return default

    qt.QSettings = QSettings
    for name, mod in (("slicer", sl), ("slicer.ScriptedLoadableModule", slm), ("qt", qt),
                      ("ctk", types.ModuleType("ctk")), ("vtk", types.ModuleType("vtk"))):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "DiffusionXRay", raising=False)
    return importlib.import_module("DiffusionXRay")


def test_module_imports_with_stub_slicer_and_builds_requests(monkeypatch):
    mod = _stub_slicer(monkeypatch)
    parent = types.SimpleNamespace()
    mod.DiffusionXRay(parent)
    assert parent.title == "DiffusionXRay" and parent.categories and "monailabel" in parent.helpText
    logic = mod.DiffusionXRayLogic("http://127.0.0.1:1")
    assert logic.client().server_url == "http://127.0.0.1:1"
    p = logic.parameters("drr", view="lateral", size=256, kvp=110, nodules=3, seed=7, steps=5)
    assert p == {"view": "lateral", "size": 256, "kvp": 110.0, "nodules": 3, "seed": 7}
    p = logic.parameters("drr_enhance", sampler="ddim", steps=5, scale=2, nodule_size=None)
    assert p["sampler"] == "ddim" and p["steps"] == 5 and p["scale"] == 2.0 and "nodule_size" not in p
    with pytest.raises(ValueError):
        logic.generate("segment", study="x")
    with pytest.raises(mod.DXRClientError, match="Select a CT volume"):
        logic.generate("drr")


# ----------------------------------------------------------------------------------------------------------------
# extension CMake files
# ----------------------------------------------------------------------------------------------------------------
def test_extension_cmake_files():
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(DiffusionXRay\)", top, re.M)
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"^set\({var}\b", top, re.M), var
    order = [top.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                    "add_subdirectory(slicer_extension)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                    "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)

    mod = (EXT / "CMakeLists.txt").read_text()
    assert "set(MODULE_NAME DiffusionXRay)" in mod
    assert re.search(r"slicerMacroBuildScriptedModule\(.*NAME \$\{MODULE_NAME\}.*WITH_GENERIC_TESTS", mod, re.S)
    listed = set()
    for block in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        body = re.search(rf"set\({block}\s(.*?)\)", mod, re.S).group(1)
        listed |= {t.replace("${MODULE_NAME}", "DiffusionXRay") for t in body.split()}
    assert "Resources/Icons/DiffusionXRay.png" in listed
    for f in [MODULE, *LIB.glob("*.py")]:
        assert str(f.relative_to(EXT)) in listed, f"{f.name} is not installed by slicer_extension/CMakeLists.txt"
    for rel in listed:
        assert (EXT / rel).is_file(), f"CMakeLists lists {rel}, which does not exist"
    assert (EXT / "README.md").is_file()


# ----------------------------------------------------------------------------------------------------------------
# DiffusionXRayLib: multipart and errors
# ----------------------------------------------------------------------------------------------------------------
def test_multipart_round_trip_is_binary_safe():
    payload = bytes(range(256)) * 3 + b"\r\n--not-a-boundary\r\n"
    body, ctype = encode_multipart({"params": json.dumps({"size": [2, 3]})}, {"file": ("volume.nrrd", payload, "")})
    parts = decode_multipart(body, ctype)
    assert json.loads(parts["params"]["data"]) == {"size": [2, 3]}
    assert parts["file"]["data"] == payload and parts["file"]["filename"] == "volume.nrrd"


def test_decodes_the_servers_multipart_answer():
    toolbelt = pytest.importorskip("requests_toolbelt")
    enc = toolbelt.MultipartEncoder(fields={"params": (None, json.dumps({"task": "drr"}), "application/json"),
                                            "image": ("dxr-1.nrrd", b"NRRD0004\n\x00\x01\r\n", "application/octet-stream")})
    parts = decode_multipart(enc.to_string(), enc.content_type)
    assert json.loads(parts["params"]["data"]) == {"task": "drr"}
    assert parts["image"]["data"] == b"NRRD0004\n\x00\x01\r\n" and parts["image"]["filename"] == "dxr-1.nrrd"


def test_error_detail_sentences():
    assert error_detail(b'{"detail": "Parameter \'kvp\' must be between 40 and 150; got 500."}').startswith("Parameter")
    assert error_detail(b'{"detail": [{"loc": ["query", "output"], "msg": "bad value"}]}') == "query.output: bad value"
    assert error_detail(b"Internal Server Error") == "Internal Server Error"


def test_upload_names_keep_the_type_suffix():
    assert upload_name("/tmp/CT 1.2.nrrd") == "volume.nrrd"
    assert upload_name("a.b.NII.GZ") == "volume.nii.gz"
    assert upload_name("/x/scan.mha") == "volume.mha"


# ----------------------------------------------------------------------------------------------------------------
# DiffusionXRayLib: geometry
# ----------------------------------------------------------------------------------------------------------------
def test_lps_ras_is_an_involution():
    p = np.array([[1.0, -2.0, 3.0], [0.5, 0.25, -7.0]])
    np.testing.assert_allclose(lps_to_ras(p), [[-1.0, 2.0, 3.0], [-0.5, -0.25, -7.0]])
    np.testing.assert_allclose(lps_to_ras(lps_to_ras(p)), p)


def test_result_without_geometry_is_a_centred_frontal_film():
    m = result_ijk_to_ras({"image": {"size": [5, 7], "pixel_spacing_mm": [0.4, 0.2]}})
    spacing, dirs, origin = split_ijk_to_ras(m)
    np.testing.assert_allclose(spacing, [0.2, 0.4, 1.0])
    np.testing.assert_allclose(dirs[:, 0], [-1, 0, 0])  # columns -> patient's left (RAS -x)
    np.testing.assert_allclose(dirs[:, 1], [0, 0, -1])  # rows -> feet
    assert np.isclose(np.linalg.det(dirs), 1.0)
    centre = m @ np.array([3.0, 2.0, 0.0, 1.0])  # middle pixel at the origin
    np.testing.assert_allclose(centre[:3], 0, atol=1e-12)


def test_lateral_geometry_and_empty_label_box():
    geometry = {"detector_origin_lps": [-400.0, -100.0, 150.0], "row_direction": [0.0, 1.0, 0.0],
                "col_direction": [0.0, 0.0, -1.0], "pixel_spacing_mm": [2.0, 1.5], "size": [10, 20]}
    result = {"image": {"size": [10, 20]}, "geometry": geometry,
              "nodules": [{"category": "ggo", "centre_lps": [10, 20, 30], "centre_px": [4.0, 3.0], "bbox": [3, 2, 3, 3]},
                          {"category": "solid", "centre_lps": [0, 0, 0], "centre_px": [1.0, 1.0], "bbox": [0, 0, 0, 0]}]}
    m = result_ijk_to_ras(result)
    np.testing.assert_allclose(m[:3, 3], [400.0, 100.0, 150.0])
    np.testing.assert_allclose(m[:3, 0], [0.0, -1.5, 0.0])  # columns run posterior (LPS +y = RAS -y)
    a, b = nodule_markups(result)
    assert a["name"] == "N1 ggo"
    np.testing.assert_allclose(a["centre_ras"], [-10, -20, 30])
    np.testing.assert_allclose(a["image_ras"], [400.0, 100.0 - 4 * 1.5, 150.0 - 3 * 2.0])
    np.testing.assert_allclose(a["roi_center_ras"], a["image_ras"])  # box [3, 6) x [2, 5): centre pixel (4, 3)
    np.testing.assert_allclose(a["roi_size_mm"], [4.5, 6.0, 1.0])
    assert b["roi_center_ras"] is None and b["image_ras"] is not None
    with pytest.raises(ValueError, match="differs"):
        result_ijk_to_ras({"image": {"size": [3, 3]}, "geometry": geometry})
