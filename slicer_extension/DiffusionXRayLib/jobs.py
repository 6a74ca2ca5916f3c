"""Background work for the Slicer module: a request runs in a worker thread while the GUI thread stays free.

Slicer's GUI (Qt, MRML) must only be touched from the main thread, so the split is:

- main thread: take a snapshot of what the request needs (CT voxels and their world matrix, the clicked nodule
  points, the options), start a :class:`BackgroundJob`, and poll it from a ``qt.QTimer`` (as SlicerMONAIAuto3DSeg
  polls its background process); on completion, load the answer into the scene;
- worker thread: write the CT file (once per node version, :class:`CTFileCache`), upload it (once per content, when
  the server's datastore accepts uploads), send the request, wait for the answer. :meth:`BackgroundJob.cancel`
  cuts the HTTP connection so the worker stops at once.

No ``slicer``/``qt`` import: tested outside Slicer.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class JobCancelled(Exception):
    """Raised inside the worker by :meth:`BackgroundJob.check` after the user pressed Cancel."""


class BackgroundJob:
    """``work(job)`` in a daemon thread; thread-safe progress (:meth:`report`), cancel, and a pollable state.

    ``work`` calls ``job.report(stage, fraction)`` (fraction in [0, 1], or None when unknown: a busy bar) and
    ``job.check()`` between steps; ``job.on_cancel(fn)`` registers what cuts a blocking call (e.g. the HTTP
    client's ``abort``). The GUI polls :meth:`status` and reads :attr:`result` / :attr:`error` when finished.
    """

    def __init__(self, work: Callable[["BackgroundJob"], Any], name: str = "DiffusionXRay request"):
        self._work = work
        self.name = name
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._cancel_hooks: List[Callable[[], None]] = []
        self.state = QUEUED
        self.stage = "Waiting to start"
        self.fraction: Optional[float] = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.error_trace = ""
        self.thread: Optional[threading.Thread] = None
        self.thread_ident: Optional[int] = None
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    # --- main thread ---------------------------------------------------------------------------------------------
    def start(self) -> "BackgroundJob":
        self.started_at = time.monotonic()
        self.state = RUNNING
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop and cut its blocking call; the state becomes ``cancelled`` when it has."""
        self._cancel.set()
        with self._lock:
            hooks = list(self._cancel_hooks)
        for hook in hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - cancelling must never raise into the GUI
                pass

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {"state": self.state, "stage": self.stage, "fraction": self.fraction,
                    "elapsed_s": self.elapsed_s(), "finished": self._finished.is_set()}

    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until finished (tests and scripts only; the GUI polls instead)."""
        return self._finished.wait(timeout)

    # --- worker thread -------------------------------------------------------------------------------------------
    def report(self, stage: Optional[str] = None, fraction: Optional[float] = None) -> None:
        self.check()
        with self._lock:
            if stage is not None:
                self.stage = stage
            self.fraction = None if fraction is None else max(0.0, min(1.0, float(fraction)))

    def check(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        with self._lock:
            self._cancel_hooks.append(hook)
        if self._cancel.is_set():
            hook()

    def _run(self) -> None:
        self.thread_ident = threading.get_ident()
        try:
            result = self._work(self)
            with self._lock:
                if self._cancel.is_set():
                    self.state = CANCELLED
                else:
                    self.result, self.state, self.fraction = result, DONE, 1.0
        except BaseException as err:  # noqa: BLE001 - reported to the GUI thread
            with self._lock:
                if self._cancel.is_set():
                    self.state = CANCELLED
                else:
                    self.error, self.state = err, FAILED
                    self.error_trace = traceback.format_exc()
        finally:
            self.finished_at = time.monotonic()
            self._finished.set()


class CTFileCache:
    """The CT file sent for a volume node, written once per node version.

    Keys are made on the main thread from the node id and modification times (and the world matrix, which a parent
    transform changes); the value is the written file and, once uploaded to the server's datastore, its study id.
    Only the newest version of each node is kept; :meth:`clear` removes the files (scene close, module cleanup).
    """

    def __init__(self, folder: Optional[str] = None):
        self.folder = folder or tempfile.mkdtemp(prefix="DiffusionXRay-ct-")
        self._lock = threading.Lock()
        self._entries: Dict[str, Tuple[Any, Dict[str, Any]]] = {}  # node id -> (key, {"path", "studies": {url: id}})
        self.writes = 0  # how many CT files were written (tests check "once per node")

    def entry(self, node_id: str, key: Any) -> Optional[Dict[str, Any]]:
        with self._lock:
            found = self._entries.get(node_id)
            if found is not None and found[0] == key and os.path.isfile(found[1]["path"]):
                return found[1]
            return None

    def file_for(self, node_id: str, key: Any, write: Callable[[str], str], suffix: str = ".nrrd") -> Dict[str, Any]:
        """The cache entry of ``(node_id, key)``, calling ``write(path)`` only when there is none."""
        hit = self.entry(node_id, key)
        if hit is not None:
            return hit
        os.makedirs(self.folder, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="ct-", suffix=suffix, dir=self.folder)
        os.close(fd)
        tmp = path + ".part"
        write(tmp)
        os.replace(tmp, path)  # atomic: a cancelled write leaves no half file under the cached name
        new = {"path": path, "studies": {}}
        with self._lock:
            old = self._entries.get(node_id)
            self._entries[node_id] = (key, new)
            self.writes += 1
        if old is not None and old[1]["path"] != path:
            _remove(old[1]["path"])
        return new

    def forget(self, node_id: str) -> None:
        with self._lock:
            old = self._entries.pop(node_id, None)
        if old is not None:
            _remove(old[1]["path"])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._entries)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
