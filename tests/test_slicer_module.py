"""The Slicer extension without Slicer: the widget's behaviour against a recording fake of slicer/qt
(tests/fake_slicer.py, on slicer-core's real MRML), the extension's CMake (configured by cmake against a stand-in
for Slicer's UseSlicer.cmake), and the pure parts of DiffusionXRayLib (multipart, errors, LPS <-> RAS placement)."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "slicer_extension"
MODULE = EXT / "DiffusionXRay.py"
LIB = EXT / "DiffusionXRayLib"
SLICER_PYTHON = (3, 9)  # Slicer 5.6-5.8 embed Python 3.9: the module must parse there

sys.path.insert(0, str(EXT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def _imports(tree: ast.Module, top_level_only: bool = False) -> set[str]:
    names = set()
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_lib_is_pure_python_and_parses_on_slicer_python():
    _tree(MODULE)
    files = sorted(LIB.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "client.py", "geometry.py", "scene.py", "jobs.py", "tasks.py"}
    for f in files:
        tree = _tree(f)
        # nothing at import time needs Slicer, Qt or VTK; scene.py imports vtk/slicer inside the MRML functions
        imported = _imports(tree, top_level_only=f.name == "scene.py")
        assert not imported & {"slicer", "qt", "ctk", "vtk", "vtkmodules", "requests"}, (f.name, imported)
        assert imported <= set(sys.stdlib_module_names) | {"numpy", "__future__"}, (f.name, imported)


# ----------------------------------------------------------------------------------------------------------------
# the widget and logic, behaviour against a recording fake of slicer/qt (tests/fake_slicer.py)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slicer_core():
    try:
        import slicer
    except ImportError:
        slicer = None
    if slicer is None or not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("PyPI slicer-core (Qt-free MRML) is not installed; the widget tests need its real MRML layer")
    return slicer


@pytest.fixture()
def fake(monkeypatch, slicer_core):
    from fake_slicer import FakeSlicer

    f = FakeSlicer(monkeypatch, slicer_core)
    yield f
    f.close()


def _ct(fake, name="SyntheticCT"):
    hu = np.full((6, 7, 8), -1000.0, dtype=np.float32)
    hu[1:5, 2:5, 2:6] = 0.0
    return fake.slicer.util.addVolumeFromArray(hu, ijkToRAS=np.diag([4.0, 4.0, 4.0, 1.0]), name=name)


def _film_nrrd(path, rows, cols):
    img = np.linspace(0, 1, rows * cols, dtype=np.float32).reshape(rows, cols)
    head = (f"NRRD0004\ntype: float\ndimension: 2\nsizes: {cols} {rows}\nendian: little\nencoding: raw\n"
            "spacings: 1 1\n\n")
    Path(path).write_bytes(head.encode() + img.astype("<f4").tobytes())
    return str(path)


class FakeClient:
    """Stands in for DXRClient: records where and with what it is called; blocks in infer() until released (or
    aborted, as the real client's socket shutdown does)."""

    instances: list = []

    def __init__(self, url, timeout=900.0, tmpdir=None):
        self.server_url = url
        self.calls = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.aborted = threading.Event()
        self.fail = None
        self.result_size = (6, 8)
        self.labels = []
        FakeClient.instances.append(self)

    def abort(self):
        self.aborted.set()
        self.release.set()

    def datastore_writable(self, info=None):
        return False

    def info(self):
        return {"name": "fake", "models": {"drr": {}, "drr_enhance": {}}, "dxr": {"enhancer": {"installed": True}}}

    def studies(self):
        return ["phantom"]

    def infer(self, task, image=None, file=None, params=None, output="all", progress=None):
        from DiffusionXRayLib import Cancelled, InferResult

        self.calls.append({"task": task, "image": image, "file": file, "params": dict(params or {}),
                           "thread": threading.get_ident()})
        if progress is not None:
            progress(50, 100)
        self.started.set()
        assert self.release.wait(20), "the test never released the fake request"
        if self.aborted.is_set():
            raise Cancelled("The request was cancelled.")
        if self.fail is not None:
            raise self.fail
        rows, cols = self.result_size
        import tempfile

        path = _film_nrrd(tempfile.mkstemp(suffix=".nrrd")[1], rows, cols)
        return InferResult(task, {"task": task, "image": {"size": [rows, cols], "pixel_spacing_mm": [1.0, 1.0]},
                                  "nodules": self.labels}, path)


@pytest.fixture()
def client_cls(fake, monkeypatch):
    FakeClient.instances = []
    monkeypatch.setattr(fake.module, "DXRClient", FakeClient)
    return FakeClient


def _last_client():
    assert FakeClient.instances, "no request was started"
    return FakeClient.instances[-1]


def test_module_metadata_and_template(fake):
    parent = type("P", (), {})()
    fake.module.DiffusionXRay(parent)
    assert parent.title == "DiffusionXRay" and parent.categories == ["Radiology"] and "monailabel" in parent.helpText
    w = fake.widget()
    # the .ui file was loaded and put into the panel; the scene-close observers are installed
    assert len(w.layout.widgets) == 1 and w.ui.drrButton.text == "Generate DRR"
    assert w.hasObserver(fake.scene, fake.scene.StartCloseEvent, w.onSceneStartClose)
    assert w.hasObserver(fake.scene, fake.scene.EndCloseEvent, w.onSceneEndClose)
    assert w.ui.progressBar.visible is False and w.ui.cancelButton.visible is False
    assert not w.ui.drrButton.enabled  # no CT yet
    _ct(fake)
    w.enter()  # picks the first CT
    assert w.logic.getParameterNode().inputVolume.GetName() == "SyntheticCT"
    assert w.ui.drrButton.enabled
    w.exit()
    w.cleanup()


def test_logic_parameters_and_refusals(fake):
    logic = fake.module.DiffusionXRayLogic("http://127.0.0.1:1")
    assert logic.client().server_url == "http://127.0.0.1:1"
    assert logic.parameters("drr", view="lateral", size=256, kvp=110, nodules=3, seed=7, steps=5) == {
        "preset": "pa-chest", "view": "lateral", "size": 256, "kvp": 110.0, "nodules": 3, "seed": 7}
    assert logic.parameters("drr", size=(24, 32))["size"] == [24, 32]
    p = logic.parameters("drr_enhance", sampler="ddim", steps=5, scale=2, nodule_size=None)
    assert p["sampler"] == "ddim" and p["steps"] == 5 and p["scale"] == 2.0 and "nodule_size" not in p
    assert set(logic.parameters("radiograph", steps=3)) == {"sampler", "steps", "scale", "seed"}
    with pytest.raises(ValueError):
        logic.startRequest("segment", study="x")
    with pytest.raises(fake.module.DXRClientError, match="Select a CT volume"):
        logic.startRequest("drr")
    xr = fake.slicer.util.addVolumeFromArray(np.zeros((1, 4, 4), np.float32), name="CR")
    with pytest.raises(fake.module.DXRClientError, match="not a 3-D CT"):
        logic.startRequest("drr", ctNode=xr)
    with pytest.raises(fake.module.DXRClientError, match="not a 2-D radiograph"):
        logic.startEnhanceRadiograph(_ct(fake))


def test_options_round_trip_through_the_parameter_node(fake, slicer_core, monkeypatch):
    w = fake.widget()
    ct = _ct(fake)
    points = fake.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    edits = {"serverUrlEdit": "http://10.0.0.5:8123", "studyEdit": "phantom_s7", "presetCombo": "ap-portable",
             "viewCombo": "lateral",
             "sizeSpin": 256, "kvpSpin": 100.0, "noduleSpin": 3, "seedSpin": 7, "noduleKindCombo": "ggo",
             "noduleSizeSpin": 14.0, "samplerCombo": "dpmpp", "stepsSpin": 5, "scaleSpin": 1.5,
             "temperatureSpin": 0.25, "inputVolumeSelector": ct, "nodulePointsSelector": points,
             "radiographSelector": ct}
    for name, value in edits.items():
        getattr(w.ui, name).userSet(value)  # as the user does
    p = w.logic.getParameterNode()
    assert p.preset == "ap-portable"
    got = {"serverUrl": p.serverUrl, "study": p.study, "view": p.view, "size": p.size, "kvp": p.kvp,
           "nodules": p.nodules, "seed": p.seed, "noduleKind": p.noduleKind, "noduleSize": p.noduleSize,
           "sampler": p.sampler, "steps": p.steps, "scale": p.scale, "temperature": p.temperature}
    assert got == {"serverUrl": "http://10.0.0.5:8123", "study": "phantom_s7", "view": "lateral", "size": 256,
                   "kvp": 100.0, "nodules": 3, "seed": 7, "noduleKind": "ggo", "noduleSize": 14.0,
                   "sampler": "dpmpp", "steps": 5, "scale": 1.5, "temperature": 0.25}
    assert p.inputVolume is ct and p.nodulePoints is points and p.radiographVolume is ct
    # the parameter node drives the widgets too
    p.steps = 9
    assert w.ui.stepsSpin.value == 9
    # ... and the request is built from it
    req = w.logic.parametersFromNode(p, "drr_enhance")
    assert req["preset"] == "ap-portable"
    keys = ("view", "size", "kvp", "nodules", "seed", "sampler", "steps", "scale", "temperature")
    assert {k: req[k] for k in keys} == {
        "view": "lateral", "size": 256, "kvp": 100.0, "nodules": 3, "seed": 7, "sampler": "dpmpp", "steps": 9,
        "scale": 1.5, "temperature": 0.25}

    # saved with the scene: a new scene read from the saved MRML gives a new widget the same options
    fake.scene.SetSaveToXMLString(1)
    fake.scene.Commit()
    xml = fake.scene.GetSceneXMLString()
    scene2 = slicer_core.vtkMRMLScene()
    scene2.SetLoadFromXMLString(1)
    scene2.SetSceneXMLString(xml)
    scene2.Import()
    monkeypatch.setattr(slicer_core, "mrmlScene", scene2)
    w2 = fake.widget()
    for name, value in edits.items():
        widget = getattr(w2.ui, name)
        if name.endswith("Selector"):
            assert widget.currentNode().GetName() == value.GetName(), name
        else:
            expected = 9 if name == "stepsSpin" else value
            assert widget.widgetValue() == expected, name


def test_request_runs_off_the_gui_thread_with_progress(fake, client_cls, monkeypatch):
    import DiffusionXRayLib.scene as scene_mod

    copies = []
    real_array_of = scene_mod._array_of
    monkeypatch.setattr(scene_mod, "_array_of", lambda node: copies.append(node.GetName()) or real_array_of(node))
    w = fake.widget()
    ct = _ct(fake)
    w.ui.inputVolumeSelector.userSet(ct)
    w.ui.sizeSpin.userSet(64)
    gui = threading.get_ident()
    w.ui.drrButton.click()  # returns although the fake client blocks until released: the request is elsewhere
    client = _last_client()
    assert not client.release.is_set()  # the request is still running after the click returned
    assert client.started.wait(10)
    call = client.calls[0]
    assert call["thread"] != gui  # the HTTP request runs in a worker thread
    assert call["task"] == "drr" and call["params"]["size"] == 64 and call["file"].endswith(".nrrd")
    assert w.pollTimer.isActive() and w.ui.progressBar.visible and w.ui.cancelButton.visible
    assert not w.ui.drrButton.enabled and not w.ui.enhanceButton.enabled  # one request at a time
    w.pollTimer.fire()  # the GUI keeps running: the poll returns at once and shows the upload fraction
    assert (w.ui.progressBar.rangeMin, w.ui.progressBar.rangeMax, w.ui.progressBar.value) == (0, 100, 50)
    assert fake.fired and set(fake.fired) == {gui}
    client.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    film = fake.scene.GetFirstNodeByName("DRR SyntheticCT")
    assert film is not None and film.GetImageData().GetDimensions() == (8, 6, 1)
    assert not w.ui.progressBar.visible and not w.ui.cancelButton.visible and w.ui.drrButton.enabled
    assert "6 x 8 pixels" in w.ui.statusLabel.text and not fake.errors

    # the CT is written once per version of the node: same file again, rewritten after the voxels change
    w.ui.drrButton.click()
    client2 = _last_client()
    client2.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    assert client2.calls[0]["file"] == call["file"] and w.logic.ctCache.writes == 1
    assert copies == ["SyntheticCT"]  # the voxels were copied (on the GUI thread) for the first request only
    ct.GetImageData().Modified()
    w.ui.drrButton.click()
    client3 = _last_client()
    client3.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    assert w.logic.ctCache.writes == 2 and copies == ["SyntheticCT"] * 2 and not fake.errors


def _clicked(fake, button: str):
    """A widget with a CT selected whose ``button`` was clicked, and the client of the request it started."""
    w = fake.widget()
    w.ui.inputVolumeSelector.userSet(_ct(fake))
    getattr(w.ui, button).click()
    return w, _last_client()


def test_cancel_stops_the_request(fake, client_cls):
    w, client = _clicked(fake, "enhanceButton")
    assert client.started.wait(10)
    n_nodes = fake.scene.GetNumberOfNodes()
    w.ui.cancelButton.click()
    assert client.aborted.is_set()  # the connection is cut, not waited for
    fake.poll_until(w, lambda: not w.pollTimer.isActive(), timeout=5)
    assert w._job.state == "cancelled"
    assert fake.scene.GetNumberOfNodes() == n_nodes  # nothing loaded
    assert w.ui.statusLabel.text.startswith("Cancelled") and not fake.errors
    assert not w.ui.progressBar.visible and w.ui.enhanceButton.enabled


def test_refused_request_shows_the_servers_sentence(fake, client_cls):
    from DiffusionXRayLib import ServerError

    w, client = _clicked(fake, "drrButton")
    client.fail = ServerError(422, "Parameter 'kvp' must be between 40 and 150; got 500.", task="drr")
    client.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    assert fake.errors and "Parameter 'kvp' must be between 40 and 150" in fake.errors[-1]
    assert w.ui.drrButton.enabled


def test_scene_close_cancels_the_request_and_resets(fake, client_cls):
    w, client = _clicked(fake, "drrButton")
    assert client.started.wait(10)
    fake.scene.Clear(0)  # File > Close scene: StartCloseEvent, EndCloseEvent
    assert client.aborted.is_set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive(), timeout=5)
    assert w._job.state == "cancelled"
    p = w.logic.getParameterNode()
    assert p.inputVolume is None and p.size == 512  # a fresh parameter node with the defaults


def test_placed_nodules_are_sent_and_matched_to_their_points(fake, client_cls):
    w = fake.widget()
    w.ui.inputVolumeSelector.userSet(_ct(fake))
    points = fake.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Nodules")
    w.ui.nodulePointsSelector.userSet(points)
    assert w.ui.nodulePlaceWidget.currentNode() is points
    w.ui.noduleKindCombo.userSet("ggo")
    w.ui.noduleSizeSpin.userSet(12.0)
    points.AddControlPoint([10.0, 20.0, 30.0])
    points.InvokeEvent(fake.slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent)  # as placing a point does
    w.ui.noduleKindCombo.userSet("calcified")
    points.AddControlPoint([-5.0, 8.0, 12.0])
    points.InvokeEvent(fake.slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent)
    assert [points.GetNthControlPointDescription(i) for i in range(2)] == ["ggo", "calcified"]

    w.ui.drrButton.click()
    client = _last_client()
    assert client.started.wait(10)
    params = client.calls[0]["params"]
    assert params["nodule_points"] == [[-10.0, -20.0, 30.0], [5.0, -8.0, 12.0]]  # LPS
    assert params["nodule_type"] == ["ggo", "calcified"] and params["nodule_size"] == 12.0
    assert "nodule_kind" not in params
    # the answer lists the labels in another order: each point still gets its own
    client.labels = [{"category": "calcified", "centre_lps": [5.0, -8.0, 12.0], "diameter_mm": 12.0},
                     {"category": "ggo", "centre_lps": [-10.0, -20.0, 30.0], "diameter_mm": 12.0, "visibility": 1.5}]
    client.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    assert not fake.errors
    assert points.GetNthControlPointDescription(0).startswith("ggo 12.0 mm, visibility (CNR) 1.50")
    assert points.GetNthControlPointDescription(1).startswith("calcified 12.0 mm")
    assert json.loads(points.GetAttribute("DiffusionXRay.result.matches")) == {"0": 1, "1": 0}


def test_enhance_a_radiograph_in_the_scene(fake, client_cls):
    w = fake.widget()
    xr = fake.slicer.util.addVolumeFromArray(np.random.default_rng(0).random((1, 3, 4)).astype(np.float32),
                                             ijkToRAS=np.diag([0.5, 0.5, 1.0, 1.0]), name="CR")
    w.ui.radiographSelector.userSet(xr)
    assert w.ui.enhanceRadiographButton.enabled
    w.ui.enhanceRadiographButton.click()
    client = _last_client()
    assert client.started.wait(10)
    assert set(client.calls[0]["params"]) == {"sampler", "scale", "seed"}  # steps 0: the model's own default
    client.result_size = (6, 8)  # 2x
    client.release.set()
    fake.poll_until(w, lambda: not w.pollTimer.isActive())
    assert not fake.errors, fake.errors
    out = fake.scene.GetFirstNodeByName("Enhanced CR")
    np.testing.assert_allclose(out.GetSpacing()[:2], (0.25, 0.25))
    np.testing.assert_allclose(out.GetOrigin(), (-0.125, -0.125, 0.0))  # same corner as the input
    head = Path(client.calls[0]["file"]).read_bytes()[:200]
    assert b"dimension: 2" in head  # sent as a 2-D image


# ----------------------------------------------------------------------------------------------------------------
# extension CMake files
# ----------------------------------------------------------------------------------------------------------------
def test_extension_cmake_files():
    top = (ROOT / "CMakeLists.txt").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in top.splitlines())
    assert "EXTENSION_BUILD_SUBDIRECTORY" not in code  # a scripted-only extension builds in the top folder
    assert re.search(r'^set\(EXTENSION_HOMEPAGE "https://github\.com/', top, re.M)
    icon_url = re.search(r'^set\(EXTENSION_ICONURL "([^"]+)"\)', top, re.M).group(1)
    shot_url = re.search(r'^set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', top, re.M).group(1)
    # the URLs point at files of this repository (raw.githubusercontent.com/<owner>/<repo>/main/<path>)
    for url in (icon_url, shot_url):
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).is_file() and rel.endswith(".png"), url
    mod = (EXT / "CMakeLists.txt").read_text()
    listed = set()
    for block in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        body = re.search(rf"set\({block}\s(.*?)\)", mod, re.S).group(1)
        listed |= {t.replace("${MODULE_NAME}", "DiffusionXRay") for t in body.split()}
    assert {"Resources/Icons/DiffusionXRay.png", "Resources/UI/DiffusionXRay.ui"} <= listed
    for f in [MODULE, *LIB.glob("*.py")]:
        assert str(f.relative_to(EXT)) in listed, f"{f.name} is not installed by slicer_extension/CMakeLists.txt"
    assert (EXT / "README.md").is_file()


_STANDIN = {
    "SlicerConfig.cmake": """
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")
""",
    "UseSlicer.cmake": """
set(BUILD_TESTING ON)
set(STANDIN_LOG "${CMAKE_BINARY_DIR}/standin.log")
file(WRITE "${STANDIN_LOG}" "")
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT MY_NAME)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: NAME is mandatory")
  endif()
  foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${f}")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule: ${f} does not exist")
    endif()
    file(APPEND "${STANDIN_LOG}" "file ${f}\n")
  endforeach()
  file(APPEND "${STANDIN_LOG}" "module ${MY_NAME} generic_tests=${MY_WITH_GENERIC_TESTS}\n")
endmacro()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: ${MY_SCRIPT} does not exist")
  endif()
  file(APPEND "${STANDIN_LOG}" "unittest ${MY_SCRIPT}\n")
endfunction()
""",
    "SlicerExtensionGenerateConfig.cmake": """
foreach(v EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION EXTENSION_ICONURL
          EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if("${${v}}" STREQUAL "")
    message(FATAL_ERROR "${v} is empty")
  endif()
endforeach()
if(NOT "${EXTENSION_BUILD_SUBDIRECTORY}" STREQUAL "" AND NOT "${EXTENSION_BUILD_SUBDIRECTORY}" STREQUAL ".")
  message(FATAL_ERROR "EXTENSION_BUILD_SUBDIRECTORY=${EXTENSION_BUILD_SUBDIRECTORY}: "
    "only SuperBuild extensions build in a sub-directory")
endif()
file(APPEND "${STANDIN_LOG}" "config ${PROJECT_NAME} ${EXTENSION_HOMEPAGE}\n")
""",
    "SlicerExtensionCPack.cmake": """
file(APPEND "${STANDIN_LOG}" "cpack ${PROJECT_NAME}\n")
""",
}


def _configure(tmp_path, source):
    standin = tmp_path / "standin"
    standin.mkdir()
    for name, text in _STANDIN.items():
        (standin / name).write_text(text)
    build = tmp_path / "build"
    proc = subprocess.run(["cmake", "-S", str(source), "-B", str(build), f"-DSlicer_DIR={standin}"],
                          capture_output=True, text=True, timeout=120)
    return proc, build


def test_cmake_configures_against_a_slicer_standin(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed; the extension's CMakeLists.txt could not be configured")
    proc, build = _configure(tmp_path, ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (build / "standin.log").read_text().splitlines()
    assert "module DiffusionXRay generic_tests=TRUE" in log
    assert "unittest DiffusionXRay.py" in log
    assert log[-2:] == ["config DiffusionXRay https://github.com/diffusionxray/diffusionxray/tree/main/slicer_extension",
                        "cpack DiffusionXRay"]
    installed = {line.split(" ", 1)[1] for line in log if line.startswith("file ")}
    assert {str(f.relative_to(EXT)) for f in [MODULE, *LIB.glob("*.py")]} <= installed
    assert "Resources/UI/DiffusionXRay.ui" in installed

    # the stand-in catches what a real Slicer configure would: the SuperBuild line, a listed file that is missing
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "slicer_extension", broken / "slicer_extension",
                    ignore=shutil.ignore_patterns("__pycache__"))
    top = (ROOT / "CMakeLists.txt").read_text()
    (broken / "CMakeLists.txt").write_text(top.replace("## NEXT_MODULE",
                                                       "set(EXTENSION_BUILD_SUBDIRECTORY inner-build)"))
    proc, _ = _configure(tmp_path / "b1", broken) if (tmp_path / "b1").mkdir() is None else None
    assert proc.returncode != 0 and "inner-build" in proc.stderr
    (broken / "CMakeLists.txt").write_text(top)
    (broken / "slicer_extension" / "DiffusionXRayLib" / "jobs.py").unlink()
    proc, _ = _configure(tmp_path / "b2", broken) if (tmp_path / "b2").mkdir() is None else None
    assert proc.returncode != 0 and "jobs.py does not exist" in proc.stderr


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
    enc = toolbelt.MultipartEncoder(fields={
        "params": (None, json.dumps({"task": "drr"}), "application/json"),
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
              "nodules": [{"category": "ggo", "centre_lps": [10, 20, 30], "centre_px": [4.0, 3.0],
                           "bbox": [3, 2, 3, 3]},
                          {"category": "solid", "centre_lps": [0, 0, 0], "centre_px": [1.0, 1.0],
                           "bbox": [0, 0, 0, 0]}]}
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


def test_defaults_follow_the_library(fake):
    """The module's defaults are the library's (preset, its kVp, sampler steps), so a plain click gives what
    `dxr drr` / `dxr enhance` give."""
    from dxr_core.drr.presets import DEFAULT_PRESET, PRESETS

    mod = fake.module
    assert mod.PRESETS[0] == DEFAULT_PRESET and set(mod.PRESETS) == set(PRESETS) | {"none"}
    assert all(mod.PRESET_KVP[k] == PRESETS[k].kvp for k in PRESETS) and mod.PRESET_KVP["none"] == 120.0
    # steps 0 (the default): no "steps" is sent, so the server's model runs with its own default
    logic = mod.DiffusionXRayLogic
    assert mod.DEFAULT_STEPS == 0 and "steps" not in logic.parameters(mod.TASK_ENHANCE)
    assert "steps" not in logic.parameters("radiograph")
    assert logic.parameters(mod.TASK_ENHANCE, steps=4)["steps"] == 4
    # temperature below 0 (the spin box's "model default", its minimum): none sent, the model's own is used;
    # 0..1 is sent as is, for the CT task and a radiograph alike
    assert mod.DEFAULT_TEMPERATURE < 0 and "temperature" not in logic.parameters(mod.TASK_ENHANCE)
    assert "temperature" not in logic.parameters("radiograph")
    assert logic.parameters(mod.TASK_ENHANCE, temperature=0.0)["temperature"] == 0.0
    assert logic.parameters("radiograph", temperature=0.5)["temperature"] == 0.5
    assert "temperature" not in logic.parameters("drr", temperature=0.5)
    from dxr_core.params import KVP_RANGE

    w = fake.widget()
    assert (w.ui.kvpSpin.minimum, w.ui.kvpSpin.maximum) == KVP_RANGE
    assert (w.ui.temperatureSpin.minimum, w.ui.temperatureSpin.maximum) == (mod.DEFAULT_TEMPERATURE, 1.0)
    assert w.ui.temperatureSpin.value == mod.DEFAULT_TEMPERATURE
    req = mod.DiffusionXRayLogic.parameters("drr")
    assert req["preset"] == DEFAULT_PRESET and "kvp" not in req
    assert mod.DiffusionXRayLogic.parameters("drr_enhance", kvp=110)["kvp"] == 110.0

