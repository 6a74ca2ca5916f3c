"""DiffusionXRay 3D Slicer module: chest CT -> DRR (with synthetic lung nodules) -> DDPM-HQ enhanced radiograph.

The work happens on a DiffusionXRay MONAI Label server (``monailabel start_server --app monailabel_app``); this
module sends the selected CT (saved to a temporary NRRD, or a study id already on the server), loads the answer as
a volume node placed on the DRR's detector plane with its pixel spacing, shows it, and adds the nodule labels as
markups. The REST client and the geometry live in ``DiffusionXRayLib`` (pure Python, tested outside Slicer).
"""
import json
import logging
import os
import shutil
import tempfile

import ctk
import qt
import slicer
import vtk  # noqa: F401  (Slicer convention; used by tests run inside the application)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from DiffusionXRayLib import (
    TASK_DRR,
    TASK_ENHANCE,
    DXRClient,
    DXRClientError,
    add_nodule_markups,
    load_result_volume,
    write_volume_node,
)

SETTINGS_URL_KEY = "DiffusionXRay/serverURL"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
VIEWS = ("pa", "ap", "lateral", "rlat")
SAMPLERS = ("ddim", "dpmpp", "ddpm")  # first = default, as dxr_core.diffusion.defaults


#
# DiffusionXRay
#
class DiffusionXRay(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DiffusionXRay"
        self.parent.categories = ["Radiology"]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffusionXRay developers"]
        self.parent.helpText = """
Turns a chest CT into a digitally reconstructed radiograph (DRR), optionally with synthetic lung nodules whose exact
positions are added as markups, and enhances / super-resolves it with a DDPM-HQ diffusion model.
Needs a running DiffusionXRay server: <code>monailabel start_server --app monailabel_app --studies DIR</code>.
Select the CT volume, enter the server URL, set the options, and press <b>Generate DRR</b> or
<b>Generate enhanced DRR</b>.
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer's scripted module template and MONAI Label's REST API.
"""


#
# DiffusionXRayWidget
#
class DiffusionXRayWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = DiffusionXRayLogic()

        # --- server -------------------------------------------------------------------------------------------
        serverBox = ctk.ctkCollapsibleButton()
        serverBox.text = "Server"
        self.layout.addWidget(serverBox)
        serverForm = qt.QFormLayout(serverBox)

        self.serverUrlEdit = qt.QLineEdit()
        self.serverUrlEdit.text = qt.QSettings().value(SETTINGS_URL_KEY, DEFAULT_SERVER_URL)
        self.serverUrlEdit.toolTip = "Address of the DiffusionXRay MONAI Label server, e.g. http://127.0.0.1:8000."
        self.connectButton = qt.QPushButton("Connect")
        self.connectButton.toolTip = "Ask the server for its tasks and studies."
        row = qt.QHBoxLayout()
        row.addWidget(self.serverUrlEdit)
        row.addWidget(self.connectButton)
        serverForm.addRow("Server URL:", row)

        self.studyCombo = qt.QComboBox()
        self.studyCombo.editable = True
        self.studyCombo.toolTip = ("Optional: a study id already on the server. Empty: the selected CT volume is "
                                   "uploaded.")
        serverForm.addRow("Server study:", self.studyCombo)

        # --- input and DRR ------------------------------------------------------------------------------------
        drrBox = ctk.ctkCollapsibleButton()
        drrBox.text = "DRR"
        self.layout.addWidget(drrBox)
        drrForm = qt.QFormLayout(drrBox)

        self.ctSelector = slicer.qMRMLNodeComboBox()
        self.ctSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.ctSelector.selectNodeUponCreation = True
        self.ctSelector.addEnabled = False
        self.ctSelector.removeEnabled = False
        self.ctSelector.noneEnabled = True
        self.ctSelector.showHidden = False
        self.ctSelector.setMRMLScene(slicer.mrmlScene)
        self.ctSelector.toolTip = "CT volume (Hounsfield units) to project; it is uploaded to the server."
        drrForm.addRow("CT volume:", self.ctSelector)

        self.viewCombo = qt.QComboBox()
        self.viewCombo.addItems(list(VIEWS))
        self.viewCombo.toolTip = "Projection: pa (frontal, posterior-anterior), ap, lateral (left lateral), rlat."
        drrForm.addRow("View:", self.viewCombo)

        self.sizeSpin = qt.QSpinBox()
        self.sizeSpin.minimum, self.sizeSpin.maximum, self.sizeSpin.value = 16, 4096, 512
        self.sizeSpin.suffix = " px"
        self.sizeSpin.toolTip = "Detector size (square), before enhancement."
        drrForm.addRow("Size:", self.sizeSpin)

        self.kvpSpin = qt.QDoubleSpinBox()
        self.kvpSpin.minimum, self.kvpSpin.maximum, self.kvpSpin.value = 40.0, 150.0, 120.0
        self.kvpSpin.decimals = 0
        self.kvpSpin.suffix = " kVp"
        self.kvpSpin.toolTip = "Tube voltage of the simulated X-ray spectrum."
        drrForm.addRow("Tube voltage:", self.kvpSpin)

        self.noduleSpin = qt.QSpinBox()
        self.noduleSpin.minimum, self.noduleSpin.maximum, self.noduleSpin.value = 0, 20, 0
        self.noduleSpin.toolTip = "Number of synthetic lung nodules to insert in 3-D; their labels become markups."
        drrForm.addRow("Nodules:", self.noduleSpin)

        self.seedSpin = qt.QSpinBox()
        self.seedSpin.minimum, self.seedSpin.maximum, self.seedSpin.value = 0, 2 ** 31 - 1, 0
        self.seedSpin.toolTip = "Seed of noise, nodules and sampler: same seed, same image."
        drrForm.addRow("Seed:", self.seedSpin)

        # --- enhancement --------------------------------------------------------------------------------------
        enhBox = ctk.ctkCollapsibleButton()
        enhBox.text = "Enhancement (DDPM-HQ)"
        self.layout.addWidget(enhBox)
        enhForm = qt.QFormLayout(enhBox)

        self.samplerCombo = qt.QComboBox()
        self.samplerCombo.addItems(list(SAMPLERS))
        self.samplerCombo.toolTip = "ddim (default), dpmpp (DPM-Solver++ 2M), or ddpm (all diffusion steps: slow)."
        enhForm.addRow("Sampler:", self.samplerCombo)

        self.stepsSpin = qt.QSpinBox()
        self.stepsSpin.minimum, self.stepsSpin.maximum, self.stepsSpin.value = 1, 1000, 20
        self.stepsSpin.toolTip = "Sampler steps (network evaluations)."
        enhForm.addRow("Steps:", self.stepsSpin)

        self.scaleSpin = qt.QDoubleSpinBox()
        self.scaleSpin.minimum, self.scaleSpin.maximum, self.scaleSpin.value = 1.0, 4.0, 2.0
        self.scaleSpin.singleStep = 0.5
        self.scaleSpin.suffix = " x"
        self.scaleSpin.toolTip = "Super-resolution factor (2: 512 -> 1024)."
        enhForm.addRow("Scale:", self.scaleSpin)

        # --- actions ------------------------------------------------------------------------------------------
        self.drrButton = qt.QPushButton("Generate DRR")
        self.drrButton.toolTip = "Project the CT to a radiograph on the server and show it."
        self.layout.addWidget(self.drrButton)
        self.enhanceButton = qt.QPushButton("Generate enhanced DRR")
        self.enhanceButton.toolTip = "Project the CT, enhance and super-resolve the DRR with DDPM-HQ, and show it."
        self.layout.addWidget(self.enhanceButton)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.layout.addWidget(self.statusLabel)
        self.layout.addStretch(1)

        self.connectButton.connect("clicked(bool)", self.onConnect)
        self.drrButton.connect("clicked(bool)", lambda _=False: self.onGenerate(TASK_DRR))
        self.enhanceButton.connect("clicked(bool)", lambda _=False: self.onGenerate(TASK_ENHANCE))
        self.ctSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.studyCombo.connect("editTextChanged(QString)", self.updateButtons)
        self.updateButtons()

    def cleanup(self):
        pass

    # helpers -------------------------------------------------------------------------------------------------
    def serverUrl(self):
        url = self.serverUrlEdit.text.strip()
        qt.QSettings().setValue(SETTINGS_URL_KEY, url)
        return url

    def study(self):
        return self.studyCombo.currentText.strip() or None

    def updateButtons(self, *_):
        ready = self.ctSelector.currentNode() is not None or bool(self.study())
        self.drrButton.enabled = ready
        self.enhanceButton.enabled = ready
        if not ready:
            self.statusLabel.text = "Select a CT volume (or name a study on the server)."

    def requestParameters(self, task):
        return self.logic.parameters(
            task,
            view=self.viewCombo.currentText,
            size=int(self.sizeSpin.value),
            kvp=float(self.kvpSpin.value),
            nodules=int(self.noduleSpin.value),
            seed=int(self.seedSpin.value),
            sampler=self.samplerCombo.currentText,
            steps=int(self.stepsSpin.value),
            scale=float(self.scaleSpin.value),
        )

    # slots ---------------------------------------------------------------------------------------------------
    def onConnect(self):
        with slicer.util.tryWithErrorDisplay("Could not connect to the DiffusionXRay server.", waitCursor=True):
            self.logic.setServerUrl(self.serverUrl())
            info = self.logic.client().info()
            studies = self.logic.client().studies()
            current = self.studyCombo.currentText
            self.studyCombo.clear()
            self.studyCombo.addItem("")
            self.studyCombo.addItems(studies)
            self.studyCombo.setEditText(current)
            tasks = ", ".join(sorted((info.get("models") or {}).keys()))
            enhancer = (info.get("dxr") or {}).get("enhancer") or {}
            model = "installed" if enhancer.get("installed") else "NOT installed (enhancement unavailable)"
            self.statusLabel.text = f"Connected to {info.get('name', 'server')}: tasks {tasks}; enhancement model {model}."

    def onGenerate(self, task):
        what = "enhanced DRR" if task == TASK_ENHANCE else "DRR"
        with slicer.util.tryWithErrorDisplay(f"Could not generate the {what}.", waitCursor=True):
            self.statusLabel.text = f"Generating the {what} on {self.serverUrl()} ..."
            slicer.app.processEvents()
            self.logic.setServerUrl(self.serverUrl())
            out = self.logic.generate(task, ctNode=self.ctSelector.currentNode(), study=self.study(),
                                      params=self.requestParameters(task))
            volume = out["volume"]
            rows, cols = out["result"]["image"]["size"]
            sr, sc = out["result"]["image"]["pixel_spacing_mm"] or (1.0, 1.0)
            self.statusLabel.text = (f"{volume.GetName()}: {rows} x {cols} pixels, {sr:.3f} x {sc:.3f} mm, "
                                     f"{len(out['result'].get('nodules') or [])} nodule label(s).")


#
# DiffusionXRayLogic
#
class DiffusionXRayLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, callable from the Python console or other modules::

        logic = DiffusionXRayLogic("http://127.0.0.1:8000")
        out = logic.generate("drr_enhance", ctNode=getNode("CT"), params=logic.parameters("drr_enhance", nodules=2))
        out["volume"], out["markups"], out["result"]
    """

    def __init__(self, serverUrl=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._serverUrl = serverUrl or qt.QSettings().value(SETTINGS_URL_KEY, DEFAULT_SERVER_URL)
        self._client = None

    def setServerUrl(self, url):
        if url != self._serverUrl:
            self._serverUrl = url
            self._client = None

    def client(self):
        if self._client is None:
            self._client = DXRClient(self._serverUrl)
        return self._client

    @staticmethod
    def parameters(task, view="pa", size=512, kvp=120.0, nodules=0, seed=0, sampler="ddim", steps=20, scale=2.0,
                   **extra):
        """Request parameters for ``task`` (``drr`` ignores the enhancement ones)."""
        params = {"view": view, "size": int(size), "kvp": float(kvp), "nodules": int(nodules), "seed": int(seed)}
        if task == TASK_ENHANCE:
            params.update({"sampler": sampler, "steps": int(steps), "scale": float(scale)})
        params.update({k: v for k, v in extra.items() if v is not None})
        return params

    def generate(self, task, ctNode=None, study=None, params=None, show=True, name=None):
        """Run ``task`` (``drr`` or ``drr_enhance``) on ``study`` (a server study id) or else on ``ctNode`` (uploaded
        as a temporary NRRD); load the result volume and nodule markups into the scene.

        Returns {"volume": vtkMRMLScalarVolumeNode, "markups": {"centres", "image_points", "rois"}, "result": dict}.
        Raises DXRClientError (its message is the server's sentence for a refused request).
        """
        if task not in (TASK_DRR, TASK_ENHANCE):
            raise ValueError(f"task must be {TASK_DRR!r} or {TASK_ENHANCE!r}, got {task!r}")
        if not study and ctNode is None:
            raise DXRClientError("Select a CT volume, or name a study on the server.")
        client = self.client()
        tmp = tempfile.mkdtemp(prefix="DiffusionXRay-")
        answer = None
        try:
            if study:
                answer = client.infer(task, image=study, params=params)
                source = study
            else:
                path = write_volume_node(slicer.mrmlScene, ctNode, os.path.join(tmp, "ct.nrrd"))
                answer = client.infer(task, file=path, params=params)
                source = ctNode.GetName()
            if not answer.image_path:
                raise DXRClientError(f"The server answered the '{task}' request without an image.")
            label = "Enhanced DRR" if task == TASK_ENHANCE else "DRR"
            nodeName = name or slicer.mrmlScene.GenerateUniqueName(f"{label} {source}")
            volume = load_result_volume(slicer.mrmlScene, answer.image_path, answer.result, nodeName)
            markups = add_nodule_markups(slicer.mrmlScene, answer.result, prefix=nodeName)
        finally:
            if answer is not None:
                answer.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)
        logging.info(f"DiffusionXRay {task}: {nodeName} {json.dumps(answer.result.get('image'))}")
        if show:
            self.show(volume)
        return {"volume": volume, "markups": markups, "result": answer.result}

    @staticmethod
    def show(volumeNode):
        """Show the radiograph in the slice views, each view turned to the image plane and fitted to it."""
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=False)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (batch / test runs)
            return
        for viewName in layoutManager.sliceViewNames():
            sliceWidget = layoutManager.sliceWidget(viewName)
            sliceWidget.mrmlSliceNode().RotateToVolumePlane(volumeNode)
            sliceWidget.sliceLogic().FitSliceToAll()


#
# DiffusionXRayTest
#
class DiffusionXRayTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test, or ctest). The server round trip needs a server: set the environment variable
    ``DIFFUSIONXRAY_SERVER_URL`` (or the module's saved server URL) to one started with
    ``monailabel start_server --app monailabel_app``; without it that part is reported as skipped."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_geometry_glue()
        self.setUp()
        self.test_server_round_trip()

    def test_geometry_glue(self):
        import numpy as np

        from DiffusionXRayLib import lps_to_ras, result_ijk_to_ras

        self.delayDisplay("LPS <-> RAS and detector placement")
        np.testing.assert_allclose(lps_to_ras([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])
        result = {"image": {"size": [4, 6], "pixel_spacing_mm": [0.5, 0.25]},
                  "geometry": {"detector_origin_lps": [1.0, 2.0, 3.0], "row_direction": [1.0, 0.0, 0.0],
                               "col_direction": [0.0, 0.0, -1.0], "pixel_spacing_mm": [0.5, 0.25], "size": [4, 6]}}
        m = result_ijk_to_ras(result)
        np.testing.assert_allclose(m[:3, 3], [-1.0, -2.0, 3.0])
        np.testing.assert_allclose(np.linalg.norm(m[:3, :2], axis=0), [0.25, 0.5])
        self.delayDisplay("Geometry glue passed")

    def _serverUrl(self):
        return os.environ.get("DIFFUSIONXRAY_SERVER_URL") or qt.QSettings().value(SETTINGS_URL_KEY, "")

    def test_server_round_trip(self):
        import numpy as np

        url = self._serverUrl()
        if not url:
            self.delayDisplay("Skipped the server round trip: set DIFFUSIONXRAY_SERVER_URL to a running server.")
            return
        self.delayDisplay(f"DRR round trip through {url}")
        # a small synthetic CT: air, a water cylinder with a bone rod, 4 mm voxels
        z, y, x = np.mgrid[0:40, 0:48, 0:48]
        hu = np.full(z.shape, -1000.0, dtype=np.float32)
        body = (x - 24) ** 2 + (y - 24) ** 2 < 18 ** 2
        hu[body] = 0.0
        hu[(x - 24) ** 2 + (y - 30) ** 2 < 3 ** 2] = 1200.0
        ct = slicer.util.addVolumeFromArray(hu, ijkToRAS=np.diag([4.0, 4.0, 4.0, 1.0]), name="SyntheticCT")

        logic = DiffusionXRayLogic(url)
        out = logic.generate(TASK_DRR, ctNode=ct, params=logic.parameters(TASK_DRR, size=64), show=True)
        volume = out["volume"]
        self.assertEqual(volume.GetImageData().GetDimensions(), (64, 64, 1))
        ps = out["result"]["image"]["pixel_spacing_mm"]
        self.assertAlmostEqual(volume.GetSpacing()[0], ps[1], places=6)
        self.assertAlmostEqual(volume.GetSpacing()[1], ps[0], places=6)
        arr = slicer.util.arrayFromVolume(volume)
        self.assertTrue(0.0 <= float(arr.min()) and float(arr.max()) <= 1.0 and float(arr.std()) > 0.0)

        with self.assertRaises(DXRClientError) as err:
            logic.generate(TASK_DRR, ctNode=ct, params=logic.parameters(TASK_DRR, size=64, kvp=500))
        self.assertIn("kvp", str(err.exception))
        self.delayDisplay("Server round trip passed")
