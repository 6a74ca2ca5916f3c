"""Shared pieces of the inference tasks: request parameters, HTTP errors, CT cache, 2-D result writer.

Nothing here computes images: DRRs, nodules and enhancement are calls into ``dxr_core``.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from dxr_core.errors import DXRError, GeometryError, InputError, ModelError, OptionError
from dxr_core.io.kinds import input_kind, is_dicom  # noqa: F401  (input_kind re-exported for the tasks)
from dxr_core.io.radiograph import jsonable  # noqa: F401  (re-exported for the infer tasks)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# errors -> HTTP
# ----------------------------------------------------------------------------------------------------------------
class NotFound(InputError):
    """The study (image id) named in the request is not in the datastore."""


class NoModel(ModelError):
    """No DDPM-HQ checkpoint is installed, so enhancement cannot run."""


def http_status(err: BaseException) -> int:
    """The 4xx code a ``dxr_core`` error is answered with (anything else is a server bug: 500)."""
    code = getattr(err, "http_code", None)
    if isinstance(err, DXRError) and isinstance(code, int):
        return code
    if isinstance(err, (NotFound, NoModel)):
        return 404
    if isinstance(err, (OptionError, GeometryError)):
        return 422
    if isinstance(err, ModelError):
        return 409  # a model exists but cannot serve this request (incompatible checkpoint)
    if isinstance(err, DXRError):
        return 400
    return 500


def http_error(err: DXRError):
    from fastapi import HTTPException

    return HTTPException(status_code=http_status(err), detail=str(err))


# ----------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------
def image_path(req: Mapping[str, Any]) -> str:
    path = req.get("image")
    if not isinstance(path, str) or not path:
        raise NotFound("The request names no study: give ?image=<study id> from /datastore, or upload a file.")
    if not os.path.exists(path):
        raise NotFound("The study no longer exists on the server; refresh the datastore (GET /datastore/) and retry.")
    return path


class CTCache:
    """The last few CT volumes read, keyed by path and modification time (thread-safe, bounded)."""

    def __init__(self, capacity: int = 2):
        self.capacity = max(0, int(capacity))
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str) -> tuple:
        st = os.stat(path)
        if os.path.isdir(path):  # a DICOM series folder: any added/removed/changed file changes the key
            entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_file())
            return (os.path.realpath(path), st.st_mtime_ns, hash(tuple(entries)))
        return (os.path.realpath(path), st.st_mtime_ns, st.st_size)

    def get(self, path: str):
        key = self._key(path)
        with self._lock:
            vol = self._items.get(key)
            if vol is not None:
                self._items.move_to_end(key)
                return vol
        vol = read_ct(path)
        if self.capacity:
            with self._lock:
                self._items[key] = vol
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return vol

    def read(self, path: str):
        """Read without caching (uploaded files: used once, deleted after the request)."""
        return read_ct(path)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def read_ct(path: str):
    """CT volume in HU through ``dxr_core.io``; a file that is not a CT is an InputError (400)."""
    from dxr_core.io.ct import read_ct as _read

    try:
        if os.path.isfile(path) and is_dicom(path):
            # one uploaded DICOM file: read it alone (the reader would otherwise scan its whole folder, e.g. /tmp)
            with tempfile.TemporaryDirectory(prefix="dxr-dcm-") as tmp:
                alone = os.path.join(tmp, "image.dcm")
                try:
                    os.link(path, alone)
                except OSError:
                    shutil.copyfile(path, alone)
                vol = _read(alone)
                vol.meta["source"] = path
                return vol
        return _read(path)
    except DXRError:
        raise
    except Exception as err:  # a reader bug on a strange file must still be a clear 4xx, not a 500
        raise InputError(f"Could not read {os.path.basename(path)!r} as a CT ({type(err).__name__}: {err}); "
                         "give a CT DICOM series or a 3-D NIfTI/NRRD/MHA file.") from err


# ----------------------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------------------
OUTPUT_DTYPES = ("float32", "uint16")


def write_result_nrrd(image: np.ndarray, pixel_spacing_mm: Sequence[float], dtype: str,
                      meta: Mapping[str, str] | None = None) -> str:
    """Write a 2-D radiograph (rows, cols) to a temporary .nrrd with its pixel spacing; return the path.

    ``pixel_spacing_mm`` is DICOM (row, col) order; NRRD/ITK spacing is (x = col, y = row). ``dtype`` "float32"
    keeps [0, 1] values, "uint16" stores round(value * 65535). The server deletes the file after sending it.
    """
    import SimpleITK as sitk

    from dxr_core.io.atomic import atomic_path

    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"result image must be 2-D, got {img.shape}")
    if dtype == "uint16":
        from dxr_core.io.dicom import to_uint16

        arr = to_uint16(img)
    else:
        arr = np.ascontiguousarray(img, dtype=np.float32)
    out = sitk.GetImageFromArray(arr)
    out.SetSpacing((float(pixel_spacing_mm[1]), float(pixel_spacing_mm[0])))
    for k, v in (meta or {}).items():
        out.SetMetaData(str(k), str(v))
    fd, path = tempfile.mkstemp(prefix="dxr-", suffix=".nrrd")
    os.close(fd)
    with atomic_path(path) as tmp:
        sitk.WriteImage(out, str(tmp), True)
    return path


def release_memory(full: bool = False) -> None:
    """Give freed numpy/torch buffers back to the OS so a long-running server returns to its idle size.

    Request buffers are freed by reference counting; ``full`` also runs the cycle collector (~0.3 s with torch
    and MONAI loaded, so only when a model is replaced).
    """
    if full:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class DXRInferTask(BasicInferTask):
    """Base of the app's tasks: no MONAI network or transforms; the BasicInferTask stages are overridden to call
    ``dxr_core`` directly (``pre_transforms`` = parse the request, then load; ``run_inferer``; ``writer``).
    Subclasses set ``DIMENSION``, ``DESCRIPTION`` and ``default_config()`` (what /info/ shows)."""

    DIMENSION = 2
    DESCRIPTION = ""

    def __init__(self, cfg, ct_cache: CTCache):
        self.cfg = cfg
        self.ct_cache = ct_cache
        super().__init__(path=None, network=None, type=InferType.OTHERS, labels=["nodule"],
                         dimension=self.DIMENSION, description=self.DESCRIPTION, config=self.default_config())

    def default_config(self) -> dict:
        return {}

    def is_valid(self) -> bool:
        return True

    def pre_transforms(self, data=None):
        return [self._parse, self._load]

    def inverse_transforms(self, data=None):
        return None

    def post_transforms(self, data=None):
        return []

