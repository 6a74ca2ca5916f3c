"""A small recording fake of the parts of 3D Slicer's Python API that need the application, for behaviour tests of
the DiffusionXRay module outside Slicer.

Real: the MRML layer (scene, nodes, observers, ``slicer.util.VTKObservationMixin``, ``addVolumeFromArray``) from
PyPI ``slicer-core``. Fake: ``qt`` (widgets built from the module's real ``.ui`` file, ``QTimer`` fired by the test,
``QSettings``), ``ctk``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` (values stored as
parameters / node references of a real ``vtkMRMLScriptedModuleNode``; ``connectGui`` binds the widgets that carry a
``SlicerParameterName`` property, both ways, as Slicer's does), ``slicer.i18n``, ``slicer.app`` and the dialogs of
``slicer.util``. Every widget call and dialog is recorded in ``FakeSlicer.calls``.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib
import sys
import threading
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "slicer_extension"

# signal each widget class emits when the user changes its value
_VALUE_SIGNALS = {"QLineEdit": "textChanged(QString)", "QSpinBox": "valueChanged(int)",
                  "QDoubleSpinBox": "valueChanged(double)", "QComboBox": "currentTextChanged(QString)",
                  "qMRMLNodeComboBox": "currentNodeChanged(vtkMRMLNode*)"}


class FakeWidget:
    """A widget of the .ui file: properties as attributes, signals with recorded connections, calls recorded."""

    def __init__(self, fake: "FakeSlicer", cls: str, name: str, props: Dict[str, Any], items: List[str]):
        object.__setattr__(self, "_fake", fake)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "children", [])
        object.__setattr__(self, "items", list(items))
        defaults = {"enabled": True, "visible": True, "text": "", "toolTip": "", "value": 0, "minimum": 0,
                    "maximum": 99, "_node": None, "scene": None, "completer": None, "rangeMin": 0, "rangeMax": 100}
        for k, v in defaults.items():
            object.__setattr__(self, k, v)
        for k, v in props.items():
            object.__setattr__(self, k, v)
        if items:
            object.__setattr__(self, "text", items[0])

    def __setattr__(self, key, value):
        self._fake.calls.append((self._name, "set", key, value))
        object.__setattr__(self, key, value)

    def __repr__(self):
        return f"<FakeWidget {self._cls} {self._name}>"

    # Qt-ish API ---------------------------------------------------------------------------------------------------
    def _record(self, method, *args):
        self._fake.calls.append((self._name, method) + args)

    def connect(self, signal, slot):
        self._record("connect", signal)
        self._slots.setdefault(signal, []).append(slot)
        return True

    def disconnect(self, signal, slot=None):
        self._record("disconnect", signal)
        slots = self._slots.get(signal, [])
        if slot is None:
            slots.clear()
        elif slot in slots:
            slots.remove(slot)

    def emit(self, signal, *args):
        for slot in list(self._slots.get(signal, [])):
            slot(*args[:_arity(slot, len(args))])

    def property(self, name):
        return self._dynamic.get(name)

    def setProperty(self, name, value):
        self._dynamic[name] = value

    def setVisible(self, v):
        self._record("setVisible", bool(v))
        object.__setattr__(self, "visible", bool(v))

    def setRange(self, lo, hi):
        self._record("setRange", lo, hi)
        object.__setattr__(self, "rangeMin", lo)
        object.__setattr__(self, "rangeMax", hi)

    def setValue(self, v):
        self._record("setValue", v)
        object.__setattr__(self, "value", v)

    def setMRMLScene(self, scene):
        self._record("setMRMLScene", scene)
        object.__setattr__(self, "scene", scene)
        for child in self.children:
            child.setMRMLScene(scene)

    def setCurrentNode(self, node):
        self._record("setCurrentNode", node)
        object.__setattr__(self, "_node", node)

    def currentNode(self):
        return self._node

    @builtins.property
    def currentText(self):
        return self.text

    def setCurrentText(self, text):
        self._record("setCurrentText", text)
        object.__setattr__(self, "text", text)

    def setCompleter(self, completer):
        self._record("setCompleter", completer)
        object.__setattr__(self, "completer", completer)

    def click(self):
        """The user presses the button."""
        self._record("click")
        if self.enabled and self.visible:
            self.emit("clicked(bool)", False)

    # the user edits a value ----------------------------------------------------------------------------------------
    def userSet(self, value):
        key = {"QLineEdit": "text", "QComboBox": "text", "QSpinBox": "value", "QDoubleSpinBox": "value"}.get(self._cls)
        if self._cls == "qMRMLNodeComboBox":
            object.__setattr__(self, "_node", value)
        else:
            if self._cls == "QComboBox" and value not in self.items:
                raise ValueError(f"{self._name} has no item {value!r}")
            object.__setattr__(self, key, value)
        self.emit(_VALUE_SIGNALS[self._cls], value)

    def widgetValue(self):
        if self._cls == "qMRMLNodeComboBox":
            return self._node
        return self.value if self._cls in ("QSpinBox", "QDoubleSpinBox") else self.text

    def setWidgetValue(self, value):
        if self._cls == "qMRMLNodeComboBox":
            object.__setattr__(self, "_node", value)
        elif self._cls in ("QSpinBox", "QDoubleSpinBox"):
            object.__setattr__(self, "value", value)
        else:
            object.__setattr__(self, "text", value)


def _arity(slot, n):
    """How many of a signal's n arguments a Python slot takes (PythonQt drops the ones it does not)."""
    import inspect

    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return n
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return n
    return min(n, sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)))


def _prop_value(el):
    for child in el:
        tag = child.tag
        if tag == "string":
            return child.text or ""
        if tag == "number":
            return int(child.text)
        if tag == "double":
            return float(child.text)
        if tag == "bool":
            return child.text == "true"
        if tag == "stringlist":
            return [s.text for s in child]
        if tag == "enum":
            return child.text
    return None


def load_ui(fake: "FakeSlicer", path) -> FakeWidget:
    """Widgets of a Qt Designer file: every <widget> with its properties (dynamic ones such as
    SlicerParameterName kept apart, as Qt does) and combo-box items."""
    tree = ET.parse(str(path))

    def build(el):
        props, dynamic, items = {}, {}, []
        for child in el:
            if child.tag == "property":
                (dynamic if child.get("stdset") == "0" else props)[child.get("name")] = _prop_value(child)
            elif child.tag == "item" and el.get("class") == "QComboBox":
                items.append(_prop_value(child.find("property")))
        w = FakeWidget(fake, el.get("class"), el.get("name"), props, items)
        w._dynamic.update(dynamic)
        for sub in el.iter("widget"):
            if sub is el:
                continue
            # direct widget descendants only (through layouts/items)
            parent = _parent_widget(tree.getroot(), sub)
            if parent is el:
                w.children.append(build(sub))
        return w

    return build(tree.getroot().find("widget"))


def _parent_widget(root, target):
    parents = {c: p for p in root.iter() for c in p}
    node = parents.get(target)
    while node is not None and node.tag != "widget":
        node = parents.get(node)
    return node


def all_widgets(top: FakeWidget):
    yield top
    for c in top.children:
        yield from all_widgets(c)


# ----------------------------------------------------------------------------------------------------------------
# parameter node wrapper (stored in a real vtkMRMLScriptedModuleNode)
# ----------------------------------------------------------------------------------------------------------------
class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, name, value):
        if value not in self.choices:
            raise ValueError(f"{name}: {value!r} is not one of {self.choices}")


class WithinRange:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def validate(self, name, value):
        if not (self.lo <= value <= self.hi):
            raise ValueError(f"{name}: {value!r} is outside [{self.lo}, {self.hi}]")


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        validators = []
        if typing.get_origin(hint) is typing.Annotated:
            base, *meta = typing.get_args(hint)
            validators = [m for m in meta if hasattr(m, "validate")]
        else:
            base = hint
        fields[name] = (base, validators, cls.__dict__.get(name, None))

    class Wrapped:
        _fields = fields

        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_guis", {})
            for name, (base, _v, default) in fields.items():
                if _is_node_type(base):
                    continue
                if node.GetParameter(name) == "" and default is not None:
                    node.SetParameter(name, _ser(default))

        def __getattr__(self, name):
            if name not in fields:
                raise AttributeError(name)
            base = fields[name][0]
            node = self.parameterNode
            if _is_node_type(base):
                return node.GetNodeReference(name)
            return _de(base, node.GetParameter(name))

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"the parameter node has no parameter {name!r}")
            base, validators, _d = fields[name]
            if _is_node_type(base):
                self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            value = base(value)
            for v in validators:
                v.validate(name, value)
            self.parameterNode.SetParameter(name, _ser(value))

        def __bool__(self):
            return True

        # GUI binding as Slicer's: widgets named by the SlicerParameterName property, both ways
        def connectGui(self, ui):
            widgets = ui.__dict__.values() if hasattr(ui, "__dict__") else ui
            bound = []
            for w in widgets:
                pname = w.property("SlicerParameterName") if isinstance(w, FakeWidget) else None
                if not pname:
                    continue
                if pname not in fields:
                    raise ValueError(f"widget {w._name} names unknown parameter {pname!r}")
                w.setWidgetValue(getattr(self, pname))

                def onUser(value, pname=pname):
                    setattr(self, pname, value)

                w.connect(_VALUE_SIGNALS[w._cls], onUser)
                bound.append((w, pname, onUser))

            def push(caller=None, event=None):
                for w, pname, _cb in bound:
                    w.setWidgetValue(getattr(self, pname))

            tag = self.parameterNode.AddObserver("ModifiedEvent", push)
            self._guis[tag] = bound
            return tag

        def disconnectGui(self, tag):
            for w, _p, cb in self._guis.pop(tag, []):
                w.disconnect(_VALUE_SIGNALS[w._cls], cb)
            if tag is not None:
                self.parameterNode.RemoveObserver(tag)

        def AddObserver(self, *args):
            return self.parameterNode.AddObserver(*args)

        def RemoveObserver(self, *args):
            return self.parameterNode.RemoveObserver(*args)

    Wrapped.__name__ = cls.__name__
    return Wrapped


def _is_node_type(t):
    return isinstance(t, type) and t.__name__.startswith("vtkMRML")


def _ser(v):
    return repr(v) if isinstance(v, float) else str(v)


def _de(base, text):
    if base is str:
        return text
    if text == "":
        return base()
    return base(text)


# ----------------------------------------------------------------------------------------------------------------
# the fake application
# ----------------------------------------------------------------------------------------------------------------
class FakeTimer:
    def __init__(self, fake):
        self._fake, self.interval, self.active, self._slots = fake, 0, False, []
        fake.timers.append(self)

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        assert signal == "timeout()"
        self._slots.append(slot)

    def start(self, ms=None):
        self._fake.calls.append(("QTimer", "start", ms))
        self.active = True

    def stop(self):
        self._fake.calls.append(("QTimer", "stop"))
        self.active = False

    def isActive(self):
        return self.active

    def fire(self):
        """One timeout, as Qt's event loop would deliver it (on the calling = GUI thread)."""
        self._fake.fired.append(threading.get_ident())
        for slot in list(self._slots):
            slot()


class FakeSlicer:
    """Installs the fake modules (undone by ``monkeypatch``) and imports the DiffusionXRay module against them."""

    def __init__(self, monkeypatch, slicer_core):
        self.calls: List[tuple] = []
        self.widgets: List[Any] = []
        self.timers: List[FakeTimer] = []
        self.fired: List[int] = []
        self.errors: List[str] = []
        self.displays: List[str] = []
        self.processEvents = 0
        self.settings: Dict[str, Any] = {}
        self.slicer = slicer_core
        self.scene = slicer_core.vtkMRMLScene()
        fake = self

        qt = types.ModuleType("qt")

        class QSettings:
            def value(self, key, default=None):
                return fake.settings.get(key, default)

            def setValue(self, key, value):
                fake.settings[key] = value

        class QCompleter:
            def __init__(self, items, parent=None):
                self.items = list(items)

        qt.QTimer = lambda *a: FakeTimer(fake)
        qt.QSettings = QSettings
        qt.QCompleter = QCompleter
        ctk = types.ModuleType("ctk")

        slm = types.ModuleType("slicer.ScriptedLoadableModule")

        class Parent:
            isEntered = True

        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent

        class Layout:
            def __init__(self):
                self.widgets = []

            def addWidget(self, w):
                self.widgets.append(w)

            def addStretch(self, *a):
                pass

        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent or Parent()
                self.layout = Layout()
                self.moduleName = type(self).__name__[: -len("Widget")]

            def setup(self):
                pass

            def resourcePath(self, filename):
                return str(EXT / "Resources" / filename)

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.moduleName = type(self).__name__[: -len("Logic")]

            def getParameterNode(self):
                scene = fake.slicer.mrmlScene
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                    n = scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode")
                    if n.GetAttribute("ModuleName") == self.moduleName:
                        return n
                n = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
                n.SetAttribute("ModuleName", self.moduleName)
                return n

        class ScriptedLoadableModuleTest(unittest.TestCase):
            def __init__(self, *a, **k):
                super().__init__("runTest" if not a else a[0])

            def delayDisplay(self, message, msec=0):
                fake.displays.append(message)

            def runTest(self):
                pass

        slm.ScriptedLoadableModule = ScriptedLoadableModule
        slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
        slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
        slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest

        pnw = types.ModuleType("slicer.parameterNodeWrapper")
        pnw.parameterNodeWrapper, pnw.Choice, pnw.WithinRange = parameterNodeWrapper, Choice, WithinRange
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: text
        i18n.translate = lambda context, text: text

        class App:
            def processEvents(self):
                fake.processEvents += 1

            def layoutManager(self):
                return None

        @contextlib.contextmanager
        def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
            try:
                yield
            except Exception as err:  # noqa: BLE001 - as Slicer's: shown, not raised
                fake.errors.append(f"{message} {err}")

        for name, mod in (("qt", qt), ("ctk", ctk), ("slicer.ScriptedLoadableModule", slm),
                          ("slicer.parameterNodeWrapper", pnw), ("slicer.i18n", i18n)):
            monkeypatch.setitem(sys.modules, name, mod)
        monkeypatch.setattr(slicer_core, "ScriptedLoadableModule", slm, raising=False)
        monkeypatch.setattr(slicer_core, "parameterNodeWrapper", pnw, raising=False)
        monkeypatch.setattr(slicer_core, "i18n", i18n, raising=False)
        monkeypatch.setattr(slicer_core, "mrmlScene", self.scene, raising=False)
        monkeypatch.setattr(slicer_core, "app", App(), raising=False)
        util = slicer_core.util
        monkeypatch.setattr(util, "loadUI", lambda path: load_ui(fake, path))
        monkeypatch.setattr(util, "childWidgetVariables",
                            lambda top: types.SimpleNamespace(**{w._name: w for w in all_widgets(top)}))
        monkeypatch.setattr(util, "tryWithErrorDisplay", tryWithErrorDisplay)
        monkeypatch.setattr(util, "errorDisplay", lambda text, *a, **k: fake.errors.append(str(text)))
        monkeypatch.setattr(util, "setSliceViewerLayers", lambda *a, **k: fake.calls.append(("setSliceViewerLayers",)))
        monkeypatch.syspath_prepend(str(EXT))
        for name in [m for m in sys.modules if m == "DiffusionXRay"]:
            monkeypatch.delitem(sys.modules, name)
        self.module = importlib.import_module("DiffusionXRay")

    def widget(self):
        w = self.module.DiffusionXRayWidget()
        w.setup()
        self.widgets.append(w)
        return w

    def close(self):
        """As the application does on exit: every widget's cleanup() (observers removed, requests cancelled)."""
        for w in self.widgets:
            w.cleanup()

    def timer(self) -> FakeTimer:
        return self.timers[-1]

    def poll_until(self, widget, done: Callable[[], bool], timeout: float = 30.0):
        """Fire the widget's poll timer (as the event loop would) until ``done()``."""
        import time

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("timed out polling the widget")
            widget.pollTimer.fire()
            time.sleep(0.01)
