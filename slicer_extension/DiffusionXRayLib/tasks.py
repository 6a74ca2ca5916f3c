"""What a background request does (worker thread, no ``slicer`` import): write the input file from a snapshot
taken on the main thread, send it to the server once, run the task, and hand the answer back.

The snapshot (:class:`VolumeSnapshot`) holds a copy of the voxels and their IJK -> LPS matrix in *world*
coordinates (parent transforms already hardened on a copy by ``scene.snapshot_volume``), so nothing here touches
MRML, which is not thread-safe.
"""
from __future__ import annotations

import gzip
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from .client import DXRClient, DXRClientError, InferResult, ServerError, file_digest
from .jobs import BackgroundJob, CTFileCache

_NRRD_TYPES = {"int8": "signed char", "uint8": "unsigned char", "int16": "short", "uint16": "unsigned short",
               "int32": "int", "uint32": "unsigned int", "float32": "float", "float64": "double"}
STUDY_PREFIX = "slicer_ct_"  # datastore ids of CTs uploaded by the module: prefix + content hash


class VolumeSnapshot:
    """Voxels (z, y, x) and IJK -> LPS (4x4, world) of a volume node, taken on the main thread.

    ``kind`` is "ct" (3-D) or "radiograph" (one slice: written as a 2-D image); ``key`` identifies the node's
    version (id, modification times, world matrix) for :class:`CTFileCache`.
    """

    def __init__(self, node_id: str, name: str, array: np.ndarray, ijk_to_lps: np.ndarray, key: Any = None,
                 kind: Optional[str] = None):
        self.node_id, self.name = node_id, name
        self.array = None if array is None else np.asarray(array)  # None: the cache already has the file
        self.ijk_to_lps = np.asarray(ijk_to_lps, dtype=np.float64)
        self.key = key if key is not None else (node_id,)
        if kind is None and self.array is None:
            raise ValueError("a snapshot without voxels must say its kind")
        self.kind = kind or ("radiograph" if self.array.ndim == 2 or self.array.shape[0] == 1 else "ct")


def write_nrrd(path: str, array: np.ndarray, ijk_to_lps: Optional[np.ndarray] = None, compress: bool = True,
               check: Optional[Callable[[], None]] = None, two_d: bool = False) -> str:
    """NRRD of ``array`` (z, y, x) placed by ``ijk_to_lps`` (LPS world, as the server reads it).

    ``two_d``: write the single slice as a 2-D image with its pixel spacing (a radiograph). ``check`` is called
    between blocks so a cancelled job stops writing."""
    arr = np.ascontiguousarray(array)
    dtype = arr.dtype.newbyteorder("=").name if arr.dtype.byteorder not in ("=", "|") else arr.dtype.name
    if dtype not in _NRRD_TYPES:
        arr, dtype = arr.astype(np.float32), "float32"
    m = np.eye(4) if ijk_to_lps is None else np.asarray(ijk_to_lps, dtype=np.float64)
    lines = ["NRRD0004", f"type: {_NRRD_TYPES[dtype]}", "endian: little",
             f"encoding: {'gzip' if compress else 'raw'}"]
    if two_d:
        plane = arr.reshape(arr.shape[-2], arr.shape[-1])
        spacing = np.linalg.norm(m[:3, :2], axis=0)
        lines += ["dimension: 2", f"sizes: {plane.shape[1]} {plane.shape[0]}",
                  "spacings: " + " ".join(f"{s:.17g}" for s in spacing)]
        arr = plane
    else:
        if arr.ndim != 3:
            raise ValueError(f"a CT array must be (z, y, x); got shape {arr.shape}")
        lines += ["dimension: 3", "space: left-posterior-superior",
                  "sizes: " + " ".join(str(s) for s in arr.shape[::-1]),
                  "space directions: " + " ".join(
                      "(" + ",".join(f"{v:.17g}" for v in m[:3, i]) + ")" for i in range(3)),
                  "kinds: domain domain domain",
                  "space origin: (" + ",".join(f"{v:.17g}" for v in m[:3, 3]) + ")"]
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)
    block = 1 << 24
    with open(path, "wb") as raw:
        raw.write(("\n".join(lines) + "\n\n").encode("ascii"))
        out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw
        try:
            for start in range(0, data.size, block):
                if check is not None:
                    check()
                out.write(data[start:start + block].tobytes())
        finally:
            if compress:
                out.close()
    return path


def run_request(job: BackgroundJob, client: DXRClient, task: str, params: Mapping[str, Any],
                snapshot: Optional[VolumeSnapshot] = None, study: Optional[str] = None,
                cache: Optional[CTFileCache] = None, use_datastore: Optional[bool] = None) -> Dict[str, Any]:
    """The worker's side of one request. Returns {"answer": InferResult, "sent": "study"|"datastore"|"upload",
    "study": id or None}. ``use_datastore`` None: ask the server whether it accepts uploads."""
    job.on_cancel(client.abort)
    if study:
        job.report(f"Running '{task}' on study {study} on the server", None)
        answer = client.infer(task, image=study, params=params)
        return {"answer": answer, "sent": "study", "study": study}
    if snapshot is None:
        raise DXRClientError("Select a CT volume (or a radiograph to enhance), or name a study on the server.")
    cache = cache if cache is not None else CTFileCache()
    what = "CT" if snapshot.kind == "ct" else "radiograph"
    job.report(f"Writing the {what}", None)
    def write(path: str) -> str:
        if snapshot.array is None:  # the cached file went away since the snapshot was taken
            raise DXRClientError(f"The {what} file prepared for this request was removed; run the request again.")
        return write_nrrd(path, snapshot.array, snapshot.ijk_to_lps, check=job.check,
                          two_d=snapshot.kind == "radiograph")

    entry = cache.file_for(snapshot.node_id, snapshot.key, write)
    job.check()

    def upload_progress(sent: int, total: int) -> None:
        job.report(f"Sending the {what} ({sent / 2 ** 20:.1f} of {total / 2 ** 20:.1f} MiB)", sent / max(total, 1))
        if sent >= total:
            job.report(f"Running '{task}' on the server", None)

    if use_datastore is None:
        use_datastore = snapshot.kind == "ct" and client.datastore_writable()
    if use_datastore:
        study_id = entry["studies"].get(client.server_url)
        try:
            if study_id is None:
                job.report(f"Checking whether the server has this {what}", None)
                study_id = STUDY_PREFIX + file_digest(entry["path"])[:20]
                if study_id not in client.studies():
                    client.upload_study(study_id, entry["path"], progress=upload_progress)
                entry["studies"][client.server_url] = study_id
            job.report(f"Running '{task}' on the server", None)
            answer = client.infer(task, image=study_id, params=params)
            return {"answer": answer, "sent": "datastore", "study": study_id}
        except ServerError as err:
            if err.status not in (403, 404):  # read-only after all, or the study was removed: send the file
                raise
            entry["studies"].pop(client.server_url, None)
    answer = client.infer(task, file=entry["path"], params=params, progress=upload_progress)
    return {"answer": answer, "sent": "upload", "study": None}


def match_labels_to_points(points_lps, labels) -> Dict[int, int]:
    """{clicked point index: label index}: the server places point nodules first, in order; each point is matched
    to the label whose 3-D centre is nearest (so a reordered or partial answer is still matched right)."""
    pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    centres = [(j, np.asarray(lab.get("centre_lps"), dtype=np.float64)) for j, lab in enumerate(labels or [])
               if lab.get("centre_lps") is not None]
    out: Dict[int, int] = {}
    used = set()
    for i, p in enumerate(pts):
        best = None
        for j, c in centres:
            if j in used:
                continue
            d = float(np.linalg.norm(c - p))
            if best is None or d < best[1]:
                best = (j, d)
        if best is not None:
            out[i] = best[0]
            used.add(best[0])
    return out


def answer_image(answer: InferResult) -> str:
    if not answer.image_path:
        raise DXRClientError(f"The server answered the '{answer.task}' request without an image.")
    return answer.image_path
