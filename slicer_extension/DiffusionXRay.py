"""DiffusionXRay 3D Slicer module: chest CT -> DRR (with synthetic lung nodules) -> DDPM-HQ enhanced radiograph.

The work happens on a DiffusionXRay MONAI Label server (``monailabel start_server --app monailabel_app``). The module
never blocks Slicer: each request runs in a background thread (``DiffusionXRayLib.jobs``) polled by a ``qt.QTimer``,
with a progress bar and a Cancel button. The CT is written and sent once per version of the volume node (or uploaded
once to the server's datastore when it accepts uploads, then named by id). The answer is loaded as a film placed on
the DRR's detector plane, with the nodule masks as a segmentation on the film, the nodule centres as a point list,
and the projection matrix as node attributes. The REST client, the geometry and the MRML glue live in
``DiffusionXRayLib`` (no Qt; tested outside Slicer).

Slicer 5.6 or newer (parameter node wrapper, translatable strings).
"""
import json
import logging
import os
import time
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DiffusionXRayLib.client import TASK_DRR, TASK_ENHANCE, DXRClient, DXRClientError
from DiffusionXRayLib.jobs import CANCELLED, DONE, BackgroundJob, CTFileCache
from DiffusionXRayLib.scene import (add_nodule_markups, add_nodule_segmentation, enhanced_ijk_to_ras,
                                    label_matched_points, load_result_volume, markups_points_lps, snapshot_volume)
from DiffusionXRayLib.tasks import match_labels_to_points, run_request

SETTINGS_URL_KEY = "DiffusionXRay/serverURL"
DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
VIEWS = ("pa", "ap", "lateral", "rlat")
SAMPLERS = ("ddim", "dpmpp", "ddpm")  # first = default, as dxr_core.diffusion.defaults
DEFAULT_STEPS = 0  # 0 = send no steps: the server's model uses its own default (its model card; tested)
# below 0 (the spin box's "model default") = send no temperature: the model's own (meta["sampling"]; tested)
DEFAULT_TEMPERATURE = -0.05
PRESETS = ("pa-chest", "ap-portable", "lateral", "none")  # first = default, as dxr_core.drr.presets (tested)
PRESET_KVP = {"pa-chest": 125.0, "ap-portable": 100.0, "lateral": 125.0, "none": 120.0}  # (tested)
NODULE_KINDS = ("solid", "part_solid", "ggo", "calcified")
POLL_INTERVAL_MS = 100
REQUEST_TIMEOUT_S = 900.0


def _settingsServerUrl():
    return qt.QSettings().value(SETTINGS_URL_KEY, DEFAULT_SERVER_URL) or DEFAULT_SERVER_URL


#
# DiffusionXRay
#
class DiffusionXRay(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffusionXRay")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiology")]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffusionXRay developers"]
        self.parent.helpText = _("""
Turns a chest CT into a digitally reconstructed radiograph (DRR), optionally with synthetic lung nodules (placed at
random or by clicking points in the CT) whose exact masks and positions come back as a segmentation and markups,
and enhances / super-resolves it, or a radiograph already in the scene, with a DDPM-HQ diffusion model.
Needs a running DiffusionXRay server: <code>monailabel start_server --app monailabel_app --studies DIR</code>.
Requests run in the background: Slicer stays responsive and <b>Cancel</b> stops them.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's scripted module template and MONAI Label's REST API.
""")


#
# DiffusionXRayParameterNode
#
@parameterNodeWrapper
class DiffusionXRayParameterNode:
    """Every option of the module, saved with the scene."""

    serverUrl: str = DEFAULT_SERVER_URL
    study: str = ""
    inputVolume: vtkMRMLScalarVolumeNode
    preset: Annotated[str, Choice(list(PRESETS))] = PRESETS[0]
    view: Annotated[str, Choice(list(VIEWS))] = "pa"
    size: Annotated[int, WithinRange(16, 4096)] = 512
    kvp: Annotated[float, WithinRange(20.0, 150.0)] = PRESET_KVP[PRESETS[0]]  # = dxr_core.params.KVP_RANGE
    nodules: Annotated[int, WithinRange(0, 20)] = 0
    seed: Annotated[int, WithinRange(0, 2 ** 31 - 1)] = 0
    nodulePoints: vtkMRMLMarkupsFiducialNode
    noduleKind: Annotated[str, Choice(list(NODULE_KINDS))] = "solid"
    noduleSize: Annotated[float, WithinRange(3.0, 30.0)] = 10.0
    sampler: Annotated[str, Choice(list(SAMPLERS))] = "ddim"
    steps: Annotated[int, WithinRange(0, 1000)] = DEFAULT_STEPS
    temperature: Annotated[float, WithinRange(DEFAULT_TEMPERATURE, 1.0)] = DEFAULT_TEMPERATURE
    scale: Annotated[float, WithinRange(1.0, 4.0)] = 2.0
    radiographVolume: vtkMRMLScalarVolumeNode


#
# DiffusionXRayWidget
#
class DiffusionXRayWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._onJobDone = None
        self._observedPoints = None
        self.pollTimer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffusionXRay.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DiffusionXRayLogic()

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.drrButton.connect("clicked(bool)", lambda _checked=False: self.onGenerate(TASK_DRR))
        self.ui.enhanceButton.connect("clicked(bool)", lambda _checked=False: self.onGenerate(TASK_ENHANCE))
        self.ui.enhanceRadiographButton.connect("clicked(bool)", self.onEnhanceRadiograph)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.nodulePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onNodulePointsChanged)
        self.ui.presetCombo.connect("currentTextChanged(QString)", self.onPresetChanged)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)

        self.initializeParameterNode()

    def cleanup(self):
        """Called when the application closes and the module widget is destroyed."""
        self.cancelRequest()
        if self.pollTimer is not None:
            self.pollTimer.stop()
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        # the request (if any) goes on in the background; only the GUI connection is dropped
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event):
        self.cancelRequest()
        self.setParameterNode(None)
        self._observePoints(None)
        if self.logic is not None:
            self.logic.ctCache.clear()
            self.logic.ctCache = CTFileCache()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # parameter node -------------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and first.GetImageData() is not None and min(first.GetImageData().GetDimensions()) > 1:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets with a SlicerParameterName property in the .ui file follow the parameter node both ways
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._observePoints(self._parameterNode.nodulePoints)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None):
        p = self._parameterNode
        busy = self._job is not None and not self._job.finished
        haveCt = bool(p and (p.inputVolume or p.study.strip()))
        self.ui.drrButton.enabled = haveCt and not busy
        self.ui.enhanceButton.enabled = haveCt and not busy
        self.ui.enhanceRadiographButton.enabled = bool(p and p.radiographVolume) and not busy
        self.ui.connectButton.enabled = not busy
        if not busy:
            if haveCt:
                self.ui.drrButton.toolTip = _("Project the CT to a radiograph on the server and show it.")
            else:
                self.ui.drrButton.toolTip = _("Select a CT volume (or name a study on the server) first.")

    def onPresetChanged(self, preset):
        """A new acquisition brings its tube voltage (the user may change it afterwards)."""
        if preset in PRESET_KVP:
            self.ui.kvpSpin.value = PRESET_KVP[preset]

    # placed nodules ---------------------------------------------------------------------------------------------
    def onNodulePointsChanged(self, node):
        self.ui.nodulePlaceWidget.setCurrentNode(node)
        self._observePoints(node)

    def _observePoints(self, node):
        if self._observedPoints is not None:
            self.removeObserver(self._observedPoints, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                                self.onNodulePointPlaced)
        self._observedPoints = node
        if node is not None:
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onNodulePointPlaced)

    def onNodulePointPlaced(self, caller, event):
        """A point just placed keeps the nodule kind chosen at that moment (its description)."""
        kind = self._parameterNode.noduleKind if self._parameterNode else NODULE_KINDS[0]
        for i in range(caller.GetNumberOfControlPoints()):
            if not caller.GetNthControlPointDescription(i):
                caller.SetNthControlPointDescription(i, kind)

    # requests ---------------------------------------------------------------------------------------------------
    def onConnect(self):
        if self._busy():
            return
        url = self._parameterNode.serverUrl.strip()
        qt.QSettings().setValue(SETTINGS_URL_KEY, url)
        self._start(self.logic.startConnect(url), _("Connecting to {url}").format(url=url), self._connected)

    def _connected(self, job):
        info, studies = job.result["info"], job.result["studies"]
        self.ui.studyEdit.toolTip = _("Studies on the server: {studies}").format(studies=", ".join(studies) or "-")
        self.ui.studyEdit.setCompleter(qt.QCompleter(studies, self.ui.studyEdit))
        tasks = ", ".join(sorted((info.get("models") or {}).keys()))
        enhancer = (info.get("dxr") or {}).get("enhancer") or {}
        model = _("installed") if enhancer.get("installed") else _("NOT installed (enhancement unavailable)")
        self.ui.statusLabel.text = _("Connected to {name}: tasks {tasks}; enhancement model {model}.").format(
            name=info.get("name", "server"), tasks=tasks, model=model)

    def onGenerate(self, task):
        if self._busy():
            return
        p = self._parameterNode
        what = _("enhanced DRR") if task == TASK_ENHANCE else _("DRR")
        with slicer.util.tryWithErrorDisplay(_("Could not start the {what} request.").format(what=what)):
            job = self.logic.startRequest(task, ctNode=p.inputVolume, study=p.study.strip() or None,
                                          params=self.logic.parametersFromNode(p, task), pointsNode=p.nodulePoints,
                                          serverUrl=p.serverUrl.strip())
            self._start(job, _("Generating the {what}").format(what=what), self._generated)

    def onEnhanceRadiograph(self):
        if self._busy():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the enhancement.")):
            job = self.logic.startEnhanceRadiograph(p.radiographVolume, self.logic.parametersFromNode(p, "radiograph"),
                                                    serverUrl=p.serverUrl.strip())
            self._start(job, _("Enhancing {name}").format(name=p.radiographVolume.GetName()), self._generated)

    def _generated(self, job):
        out = self.logic.finishRequest(job)
        volume = out["volume"]
        rows, cols = out["result"]["image"]["size"]
        sr, sc = out["result"]["image"].get("pixel_spacing_mm") or (1.0, 1.0)
        self.ui.statusLabel.text = _(
            "{name}: {rows} x {cols} pixels, {sr:.3f} x {sc:.3f} mm, {n} nodule label(s), {s:.1f} s.").format(
            name=volume.GetName(), rows=rows, cols=cols, sr=sr, sc=sc, n=len(out["result"].get("nodules") or []),
            s=job.elapsed_s())

    def _busy(self):
        return self._job is not None and not self._job.finished

    def _start(self, job, title, onDone):
        self._job, self._onJobDone = job, onDone
        self.ui.statusLabel.text = title + " ..."
        self.ui.progressBar.setRange(0, 0)  # busy until the job reports a fraction
        self.ui.progressBar.setVisible(True)
        self.ui.cancelButton.setVisible(True)
        self.ui.cancelButton.enabled = True
        self._updateButtons()
        self.pollTimer.start()

    def onCancel(self):
        self.cancelRequest()
        self.ui.statusLabel.text = _("Cancelling ...")
        self.ui.cancelButton.enabled = False

    def cancelRequest(self):
        if self._job is not None and not self._job.finished:
            self._job.cancel()

    def onPoll(self):
        """Called by the QTimer on the GUI thread: show the job's progress; when it has finished, load its result."""
        job = self._job
        if job is None:
            self.pollTimer.stop()
            return
        status = job.status()
        if status["fraction"] is None:
            self.ui.progressBar.setRange(0, 0)
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.setValue(int(round(100 * status["fraction"])))
        if not status["finished"]:
            self.ui.statusLabel.text = f"{status['stage']} ... ({status['elapsed_s']:.0f} s)"
            return
        self.pollTimer.stop()
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        onDone, self._onJobDone = self._onJobDone, None
        try:
            if job.state == DONE:
                with slicer.util.tryWithErrorDisplay(_("Could not load the server's answer.")):
                    onDone(job)
            elif job.state == CANCELLED:
                self.ui.statusLabel.text = _("Cancelled after {s:.1f} s.").format(s=job.elapsed_s())
                self.logic.discard(job)
            else:
                self.ui.statusLabel.text = str(job.error)
                logging.error(f"DiffusionXRay: {job.error}\n{job.error_trace}")
                slicer.util.errorDisplay(str(job.error))
                self.logic.discard(job)
        finally:
            self._updateButtons()


#
# DiffusionXRayLogic
#
class DiffusionXRayLogic(ScriptedLoadableModuleLogic):
    """Everything the widget does, callable from the Python console or other modules::

        logic = DiffusionXRayLogic("http://127.0.0.1:8000")
        out = logic.generate("drr_enhance", ctNode=getNode("CT"), params=logic.parameters("drr_enhance", nodules=2))
        out["volume"], out["markups"], out["segmentation"], out["result"]

    ``startRequest`` / ``finishRequest`` are the non-blocking pair the widget uses (a :class:`BackgroundJob` in
    between, polled from a QTimer).
    """

    def __init__(self, serverUrl=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._serverUrl = serverUrl or _settingsServerUrl()
        self.ctCache = CTFileCache()
        self.timeout = REQUEST_TIMEOUT_S

    def getParameterNode(self):
        return DiffusionXRayParameterNode(super().getParameterNode())

    def setServerUrl(self, url):
        self._serverUrl = url

    def client(self, url=None, timeout=None):
        return DXRClient(url or self._serverUrl, timeout=timeout or self.timeout)

    def cleanup(self):
        self.ctCache.clear()

    @staticmethod
    def parameters(task, view="pa", size=512, kvp=None, nodules=0, seed=0, sampler="ddim", steps=DEFAULT_STEPS,
                   scale=2.0, preset=PRESETS[0], temperature=DEFAULT_TEMPERATURE, **extra):
        """Request parameters for ``task`` (``drr`` ignores the enhancement ones; "radiograph" has only those).
        ``kvp`` None: the preset's; ``steps`` 0 and ``temperature`` below 0: the model's own."""
        enh = {"sampler": sampler, "scale": float(scale)}
        if int(steps) > 0:  # 0: the model's own default
            enh["steps"] = int(steps)
        if float(temperature) >= 0.0:  # below 0: the model's own default
            enh["temperature"] = round(float(temperature), 4)
        if task == "radiograph":
            return {**enh, "seed": int(seed)}
        size = [int(v) for v in size] if isinstance(size, (list, tuple)) else int(size)  # N or [rows, cols]
        params = {"preset": preset, "view": view, "size": size, "nodules": int(nodules), "seed": int(seed)}
        if kvp is not None:
            params["kvp"] = float(kvp)
        if task == TASK_ENHANCE:
            params.update(enh)
        params.update({k: v for k, v in extra.items() if v is not None})
        return params

    def parametersFromNode(self, p, task):
        return self.parameters(task, preset=p.preset, view=p.view, size=p.size, kvp=p.kvp, nodules=p.nodules,
                               seed=p.seed, sampler=p.sampler, steps=p.steps, scale=p.scale,
                               temperature=p.temperature,
                               nodule_size=float(p.noduleSize), nodule_kind=p.noduleKind)

    @staticmethod
    def nodulePointParameters(pointsNode, defaultKind="solid", size=None):
        """``nodule_points`` (LPS, world), ``nodule_type`` (each point's kind, from its description) and
        ``nodule_size`` for the points of ``pointsNode``; {} when it has none."""
        points = markups_points_lps(pointsNode)
        if not points:
            return {}
        kinds = []
        for i in range(len(points)):
            words = (pointsNode.GetNthControlPointDescription(i) or "").split()
            kinds.append(words[0] if words and words[0] in NODULE_KINDS else defaultKind)
        out = {"nodule_points": points, "nodule_type": kinds}
        if size is not None:
            out["nodule_size"] = float(size)
        return out

    # non-blocking pair ------------------------------------------------------------------------------------------
    def startConnect(self, url):
        client = self.client(url, timeout=30.0)

        def work(job):
            job.on_cancel(client.abort)
            job.report(_("Asking {url} for its tasks").format(url=client.server_url))
            return {"info": client.info(), "studies": client.studies()}

        return BackgroundJob(work, "DiffusionXRay connect").start()

    def startRequest(self, task, ctNode=None, study=None, params=None, pointsNode=None, serverUrl=None, name=None):
        """Snapshot the inputs (main thread) and start the request in a background thread; returns the job."""
        if task not in (TASK_DRR, TASK_ENHANCE):
            raise ValueError(f"task must be {TASK_DRR!r} or {TASK_ENHANCE!r}, got {task!r}")
        if not study and ctNode is None:
            raise DXRClientError(_("Select a CT volume, or name a study on the server."))
        params = dict(params if params is not None else self.parameters(task))
        kind = params.pop("nodule_kind", None) or NODULE_KINDS[0]
        points = self.nodulePointParameters(pointsNode, kind, params.get("nodule_size"))
        if points:
            params.update(points)
        else:
            params.pop("nodule_size", None)  # only placed nodules use the module's diameter
        snapshot = None if study else self._snapshot(ctNode, want="ct")
        client = self.client(serverUrl)
        job = BackgroundJob(lambda j: run_request(j, client, task, params, snapshot=snapshot, study=study,
                                                  cache=self.ctCache), f"DiffusionXRay {task}")
        source = study or ctNode.GetName()
        label = _("Enhanced DRR") if task == TASK_ENHANCE else _("DRR")
        job.request = {"task": task, "params": params, "name": name or f"{label} {source}",
                       "pointsNodeId": pointsNode.GetID() if (pointsNode is not None and points) else None,
                       "points": points.get("nodule_points", [])}
        return job.start()

    def startEnhanceRadiograph(self, radiographNode, params=None, serverUrl=None, name=None):
        """Enhance a 2-D volume already in the scene (a CR/DX radiograph): the answer is placed on its plane."""
        if radiographNode is None:
            raise DXRClientError(_("Select the radiograph to enhance (a 2-D volume in the scene)."))
        params = dict(params if params is not None else self.parameters("radiograph"))
        params = {k: params[k] for k in ("sampler", "steps", "scale", "seed") if k in params}
        snapshot = self._snapshot(radiographNode, want="radiograph")
        client = self.client(serverUrl)
        job = BackgroundJob(lambda j: run_request(j, client, TASK_ENHANCE, params, snapshot=snapshot,
                                                  cache=self.ctCache, use_datastore=False),
                            "DiffusionXRay enhance radiograph")
        dims = radiographNode.GetImageData().GetDimensions()
        job.request = {"task": TASK_ENHANCE, "params": params, "points": [], "pointsNodeId": None,
                       "name": name or _("Enhanced {name}").format(name=radiographNode.GetName()),
                       "placeOn": {"ijkToRAS": (snapshot.ijk_to_lps * [[-1], [-1], [1], [1]]).tolist(),
                                   "sizeXY": [dims[0], dims[1]]}}
        return job.start()

    def _snapshot(self, node, want):
        dims = node.GetImageData().GetDimensions() if node.GetImageData() is not None else (0, 0, 0)
        if want == "ct" and min(dims) < 2:
            raise DXRClientError(_("The selected volume is {x} x {y} x {z} voxels, not a 3-D CT; select a CT volume "
                                   "(or use 'Enhance this radiograph' for a 2-D image).").format(
                x=dims[0], y=dims[1], z=dims[2]))
        if want == "radiograph" and (dims[2] != 1 or min(dims[:2]) < 2):
            raise DXRClientError(_("The selected volume is {x} x {y} x {z} voxels, not a 2-D radiograph; select a "
                                   "single-slice image (CR/DX).").format(x=dims[0], y=dims[1], z=dims[2]))
        return snapshot_volume(slicer.mrmlScene, node, cache=self.ctCache)

    def finishRequest(self, job, show=True):
        """Main thread: load a finished job's answer into the scene (film, nodule point lists, segmentation, matched
        placed points). Returns {"volume", "markups", "segmentation", "matches", "result", "sent"}."""
        if job.state != DONE:
            raise job.error if job.error is not None else DXRClientError(_("The request was cancelled."))
        answer = job.result["answer"]
        req = job.request
        scene = slicer.mrmlScene
        try:
            if not answer.image_path:
                raise DXRClientError(_("The server answered the request without an image."))
            nodeName = scene.GenerateUniqueName(req["name"])
            place = req.get("placeOn")
            ijkToRAS = None
            if place is not None:
                rows, cols = answer.result["image"]["size"]
                ijkToRAS = enhanced_ijk_to_ras(place["ijkToRAS"], place["sizeXY"], (cols, rows))
            volume = load_result_volume(scene, answer.image_path, answer.result, nodeName, ijk_to_ras=ijkToRAS)
            markups = add_nodule_markups(scene, answer.result, prefix=nodeName)
            segmentation = add_nodule_segmentation(scene, answer.result, volume)
            matches = {}
            if req.get("pointsNodeId"):
                matches = match_labels_to_points(req["points"], answer.result.get("nodules") or [])
                pointsNode = scene.GetNodeByID(req["pointsNodeId"])
                if pointsNode is not None:
                    label_matched_points(pointsNode, answer.result, matches)
        finally:
            answer.cleanup()
        volume.SetAttribute("DiffusionXRay.sentAs", job.result.get("sent") or "")
        logging.info(f"DiffusionXRay {req['task']}: {nodeName} {json.dumps(answer.result.get('image'))}")
        if show:
            self.show(volume)
        return {"volume": volume, "markups": markups, "segmentation": segmentation, "matches": matches,
                "result": answer.result, "sent": job.result.get("sent")}

    @staticmethod
    def discard(job):
        if job.result and job.result.get("answer") is not None:
            job.result["answer"].cleanup()

    # blocking convenience (console, self-test) -------------------------------------------------------------------
    def wait(self, job, timeout=None):
        """Wait for ``job`` while keeping the application responsive (events processed every 50 ms)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        app = getattr(slicer, "app", None)
        while True:  # events first, then wait: the application stays responsive even for a quick answer
            if app is not None and hasattr(app, "processEvents"):
                app.processEvents()
            if job.wait(0.05):
                break
            if deadline is not None and time.monotonic() > deadline:
                job.cancel()
                job.wait(10)
                raise DXRClientError(_("The request took longer than {s:g} s and was cancelled.").format(s=timeout))
        if job.state != DONE:
            raise job.error if job.error is not None else DXRClientError(_("The request was cancelled."))
        return job

    def generate(self, task, ctNode=None, study=None, params=None, show=True, name=None, pointsNode=None,
                 timeout=None):
        """Run ``task`` (``drr`` or ``drr_enhance``) on ``study`` (a server study id) or else on ``ctNode`` and load
        the answer (see :meth:`finishRequest`). Raises DXRClientError with the server's sentence when refused."""
        job = self.startRequest(task, ctNode=ctNode, study=study, params=params, pointsNode=pointsNode, name=name)
        return self.finishRequest(self.wait(job, timeout), show=show)

    def enhanceRadiograph(self, radiographNode, params=None, show=True, name=None, timeout=None):
        job = self.startEnhanceRadiograph(radiographNode, params, name=name)
        return self.finishRequest(self.wait(job, timeout), show=show)

    @staticmethod
    def show(volumeNode):
        """Show the radiograph in the slice views, each view turned to the image plane and fitted to it."""
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=False)
        layoutManager = slicer.app.layoutManager() if hasattr(slicer, "app") else None
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
    """Runs in Slicer (Reload and Test, or ctest) and, with its Qt-free parts, in the project's pytest suite.

    The server round trip needs a server: set the environment variable ``DIFFUSIONXRAY_SERVER_URL`` (or the
    module's saved server URL) to one started with ``monailabel start_server --app monailabel_app``; without a
    reachable server that part is reported as skipped, with the reason (``self.skipped``)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)
        if not hasattr(self, "skipped"):
            self.skipped = []

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
                  "geometry": {"detector_origin_lps": [1.0, 2.0, 3.0], "row_direction": [0.0, -1.0, 0.0],
                               "col_direction": [0.0, 0.0, -1.0], "pixel_spacing_mm": [0.5, 0.25], "size": [4, 6]}}
        m = result_ijk_to_ras(result)
        np.testing.assert_allclose(m[:3, 3], [-1.0, -2.0, 3.0])
        np.testing.assert_allclose(m[:3, 0], [0.0, 0.25, 0.0])  # columns run anterior (RAS +y); not transposed
        np.testing.assert_allclose(np.linalg.norm(m[:3, :2], axis=0), [0.25, 0.5])
        self.delayDisplay("Geometry glue passed")

    def serverSkipReason(self, url=None):
        """None when a DiffusionXRay server answers at ``url``; else why the round trip cannot run."""
        url = url or os.environ.get("DIFFUSIONXRAY_SERVER_URL") or ""
        if not url:
            return "no server named: set DIFFUSIONXRAY_SERVER_URL to a running DiffusionXRay server"
        try:
            info = DXRClient(url, timeout=5.0).info()
        except DXRClientError as err:
            return f"no DiffusionXRay server reachable at {url} ({err})"
        if "drr" not in (info.get("models") or {}):
            return f"the server at {url} is not a DiffusionXRay server (no 'drr' task)"
        return None

    def test_server_round_trip(self, url=None):
        import numpy as np

        url = url or os.environ.get("DIFFUSIONXRAY_SERVER_URL") or ""
        reason = self.serverSkipReason(url)
        if reason:
            self.skipped.append(reason)
            self.delayDisplay(f"Skipped the server round trip: {reason}.")
            return
        self.delayDisplay(f"DRR round trip through {url}")
        # a small synthetic chest: air, a water body with two air lungs and a bone rod, 4 mm voxels
        z, y, x = np.mgrid[0:40, 0:48, 0:48]
        hu = np.full(z.shape, -1000.0, dtype=np.float32)
        hu[(x - 24) ** 2 + (y - 24) ** 2 < 20 ** 2] = 0.0
        for cx in (15, 33):
            hu[((x - cx) ** 2 + (y - 24) ** 2 < 7 ** 2) & (z > 5) & (z < 35)] = -850.0
        hu[(x - 24) ** 2 + (y - 36) ** 2 < 3 ** 2] = 1200.0
        ct = slicer.util.addVolumeFromArray(hu, ijkToRAS=np.diag([4.0, 4.0, 4.0, 1.0]), name="SyntheticCT")

        logic = DiffusionXRayLogic(url)
        out = logic.generate(TASK_DRR, ctNode=ct, params=logic.parameters(TASK_DRR, size=64), show=True, timeout=300)
        volume = out["volume"]
        self.assertEqual(volume.GetImageData().GetDimensions(), (64, 64, 1))
        ps = out["result"]["image"]["pixel_spacing_mm"]
        self.assertAlmostEqual(volume.GetSpacing()[0], ps[1], places=6)
        self.assertAlmostEqual(volume.GetSpacing()[1], ps[0], places=6)
        arr = slicer.util.arrayFromVolume(volume)
        self.assertTrue(0.0 <= float(arr.min()) and float(arr.max()) <= 1.0 and float(arr.std()) > 0.0)
        self.assertIsNotNone(volume.GetAttribute("DiffusionXRay.projectionMatrixRAS"))

        self.delayDisplay("A nodule placed by hand comes back matched to its point")
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Nodules")
        points.AddControlPoint([60.0, 96.0, 80.0])  # RAS = 4 mm x (i, j, k) = (15, 24, 20): inside a lung
        points.SetNthControlPointDescription(0, "solid")
        out = logic.generate(TASK_DRR, ctNode=ct, pointsNode=points, timeout=300,
                             params=logic.parameters(TASK_DRR, size=64, nodule_size=12.0))
        self.assertEqual(out["matches"], {0: 0})
        centre = out["result"]["nodules"][0]["centre_lps"]
        np.testing.assert_allclose(centre, [-60.0, -96.0, 80.0], atol=1e-6)
        self.assertTrue(points.GetNthControlPointDescription(0).startswith("solid"))
        self.assertIsNotNone(out["segmentation"])

        with self.assertRaises(DXRClientError) as err:
            logic.generate(TASK_DRR, ctNode=ct, params=logic.parameters(TASK_DRR, size=64, kvp=500), timeout=300)
        self.assertIn("kvp", str(err.exception))
        self.delayDisplay("Server round trip passed")
