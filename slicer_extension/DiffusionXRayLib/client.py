"""REST client for the DiffusionXRay MONAI Label app (``monailabel start_server --app monailabel_app``).

Standard library only (``http.client``), so it runs in any 3D Slicer Python without installing packages, and no
``slicer`` import, so it is tested outside Slicer against a real server.

The server's inference endpoint is ``POST /infer/{task}``:

- the input is either a study id in the query (``?image=<study id from GET /datastore/>``) or an uploaded file
  (multipart form field ``file``); the request parameters travel as a JSON string in the form field ``params``;
- the answer (``output=all``, the default) is ``multipart/form-data`` with a ``params`` part (the result JSON:
  image size and pixel spacing, geometry and projection matrix, nodule labels, ...) and an ``image`` part
  (a 2-D NRRD); ``output=json`` answers the JSON alone;
- a refused request is a 4xx whose JSON ``detail`` is one sentence saying what is wrong and how to fix it:
  :class:`ServerError` carries that sentence to the user unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import uuid
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

TASK_DRR = "drr"
TASK_ENHANCE = "drr_enhance"

UPLOAD_CHUNK = 1 << 20  # bytes per send(): the granularity of upload progress and of cancelling an upload
#: upload names keep only the final suffix(es) the server understands: MONAI Label takes the file type from
#: every suffix of the uploaded name, so "CT 1.2.nrrd" would arrive as a ".2.nrrd" file.
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif", ".tiff", ".jpg",
                   ".jpeg")


class DXRClientError(Exception):
    """Any failure talking to the DiffusionXRay server; ``str(err)`` is a sentence for the user."""


class Cancelled(DXRClientError):
    """The user stopped the request (:meth:`DXRClient.abort`)."""


class ServerUnreachable(DXRClientError):
    """No HTTP answer at all: wrong URL, server not started, or a network/timeout problem."""


class ServerError(DXRClientError):
    """The server answered with an error status; ``detail`` is the server's own sentence."""

    def __init__(self, status: int, detail: str, url: str = "", task: str = ""):
        self.status = int(status)
        self.detail = detail.strip() if detail else ""
        self.url = url
        self.task = task
        what = f"'{task}' request" if task else "request"
        if 400 <= self.status < 500:
            msg = f"The DiffusionXRay server refused the {what} ({self.status}): {self.detail or 'no reason given'}"
        else:
            msg = (f"The DiffusionXRay server failed on the {what} ({self.status}): "
                   f"{self.detail or 'no reason given'}; see the server log.")
        super().__init__(msg)


class InferResult:
    """One inference answer: the result JSON and the image file written to a temporary path."""

    def __init__(self, task: str, result: Dict[str, Any], image_path: Optional[str] = None):
        self.task = task
        self.result = result
        self.image_path = image_path

    # convenience views on the JSON -----------------------------------------------------------------------------
    @property
    def size(self) -> Tuple[int, int]:
        """(rows, cols) of the result image."""
        rows, cols = self.result["image"]["size"]
        return int(rows), int(cols)

    @property
    def pixel_spacing_mm(self) -> Optional[Tuple[float, float]]:
        """(row spacing, col spacing) in mm (DICOM order), or None when the server could not tell."""
        ps = self.result.get("image", {}).get("pixel_spacing_mm")
        return (float(ps[0]), float(ps[1])) if ps else None

    @property
    def geometry(self) -> Optional[Dict[str, Any]]:
        return self.result.get("geometry")

    @property
    def nodules(self) -> List[Dict[str, Any]]:
        return list(self.result.get("nodules") or [])

    def cleanup(self) -> None:
        """Delete the temporary image file."""
        if self.image_path and os.path.exists(self.image_path):
            os.remove(self.image_path)
        self.image_path = None

    def __repr__(self) -> str:
        return f"InferResult(task={self.task!r}, image_path={self.image_path!r}, keys={sorted(self.result)})"


# ----------------------------------------------------------------------------------------------------------------
# multipart encoding / decoding (binary safe)
# ----------------------------------------------------------------------------------------------------------------
def upload_name(path: str) -> str:
    """A safe upload file name for ``path`` that keeps its type suffix (``volume.nrrd``, ``volume.nii.gz``)."""
    low = os.path.basename(path).lower()
    for suffix in _KNOWN_SUFFIXES:
        if low.endswith(suffix):
            return "volume" + suffix
    return "volume" + os.path.splitext(low)[1]


def encode_multipart(fields: Mapping[str, str], files: Mapping[str, Tuple[str, bytes, str]] = None,
                     boundary: Optional[str] = None) -> Tuple[bytes, str]:
    """``multipart/form-data`` body and its Content-Type for text ``fields`` and ``files`` {name: (filename,
    data, content type)}."""
    boundary = boundary or f"dxr-{uuid.uuid4().hex}"
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.append(str(value).encode("utf-8"))
        out.append(b"\r\n")
    for name, (filename, data, ctype) in (files or {}).items():
        out.append((f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {ctype or 'application/octet-stream'}\r\n\r\n").encode())
        out.append(bytes(data))
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _header_param(header: str, key: str) -> Optional[str]:
    m = re.search(r'(?:^|;)\s*' + re.escape(key) + r'\s*=\s*("([^"]*)"|[^;\s]+)', header, flags=re.I)
    if not m:
        return None
    return m.group(2) if m.group(2) is not None else m.group(1)


def decode_multipart(body: bytes, content_type: str) -> Dict[str, Dict[str, Any]]:
    """Parts of a ``multipart/*`` body: {name: {"headers": {lower-case key: value}, "filename": str|None,
    "data": bytes}}."""
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        raise DXRClientError(f"The server's multipart answer has no boundary (Content-Type {content_type!r}).")
    delim = b"--" + boundary.encode("latin-1")
    parts: Dict[str, Dict[str, Any]] = {}
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = _header_param(disp, "name") or f"part{len(parts)}"
        parts[name] = {"headers": headers, "filename": _header_param(disp, "filename"), "data": data}
    return parts


def error_detail(body: bytes) -> str:
    """The sentence of an error answer: FastAPI's ``{"detail": str | [{"loc", "msg"}, ...]}`` or plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:500]
    detail = obj.get("detail", obj) if isinstance(obj, dict) else obj
    if isinstance(detail, list):  # request validation errors
        msgs = []
        for d in detail:
            if isinstance(d, dict):
                loc = ".".join(str(x) for x in d.get("loc", []) if x != "body")
                msgs.append(f"{loc}: {d.get('msg', '')}" if loc else str(d.get("msg", d)))
            else:
                msgs.append(str(d))
        return "; ".join(msgs)
    return detail if isinstance(detail, str) else json.dumps(detail)


# ----------------------------------------------------------------------------------------------------------------
# the client
# ----------------------------------------------------------------------------------------------------------------
class DXRClient:
    """Client of one DiffusionXRay server.

    >>> client = DXRClient("http://127.0.0.1:8000")
    >>> res = client.drr(image="phantom", view="pa", size=512, nodules=2)   # a study on the server
    >>> res = client.drr_enhance(file="/tmp/ct.nrrd", steps=20)              # an uploaded CT
    >>> res.image_path, res.size, res.pixel_spacing_mm, res.nodules
    """

    def __init__(self, server_url: str, timeout: float = 900.0, tmpdir: Optional[str] = None):
        self.server_url = self.normalize_url(server_url)
        self.timeout = float(timeout)
        self.tmpdir = tmpdir
        self._lock = threading.Lock()
        self._conn = None
        self._aborted = False

    @staticmethod
    def normalize_url(url: str) -> str:
        url = (url or "").strip()
        if not url:
            raise DXRClientError("No server URL given; enter the DiffusionXRay server address, e.g. "
                                 "http://127.0.0.1:8000.")
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DXRClientError(f"{url!r} is not an http(s) server address; enter e.g. http://127.0.0.1:8000.")
        return url.rstrip("/")

    # transport -------------------------------------------------------------------------------------------------
    def abort(self) -> None:
        """Stop the request in flight (from any thread): its socket is shut down, so the blocked call raises
        :class:`Cancelled` at once. The client stays usable for the next request."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _request(self, method: str, selector: str, body: Optional[bytes] = None,
                 headers: Optional[Dict[str, str]] = None, task: str = "",
                 progress: Optional[Callable[[int, int], None]] = None) -> Tuple[bytes, str]:
        """One HTTP exchange on its own connection (``http.client``, so :meth:`abort` can cut it from another
        thread); ``progress(sent, total)`` is called while the body is uploaded."""
        url = self.server_url + selector
        parts = urlsplit(url)
        cls = HTTPSConnection if parts.scheme == "https" else HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            self._aborted = False
            self._conn = conn
        try:
            conn.putrequest(method, path)
            hdrs = dict(headers or {})
            if body is not None:
                hdrs["Content-Length"] = str(len(body))
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            if body is not None:
                view, total = memoryview(body), len(body)
                for start in range(0, total, UPLOAD_CHUNK):
                    self._check_aborted()
                    conn.send(view[start:start + UPLOAD_CHUNK])
                    if progress is not None:
                        progress(min(start + UPLOAD_CHUNK, total), total)
            resp = conn.getresponse()
            data = resp.read()
            self._check_aborted()
            if resp.status >= 400:
                raise ServerError(resp.status, error_detail(data) or resp.reason, url, task)
            return data, resp.headers.get("Content-Type", "")
        except DXRClientError:
            raise
        except (socket.timeout, TimeoutError):
            self._check_aborted()
            raise ServerUnreachable(f"The DiffusionXRay server at {self.server_url} did not answer within "
                                    f"{self.timeout:g} s; ask for a smaller size or fewer steps, or raise the "
                                    "client timeout.") from None
        except (HTTPException, ConnectionError, OSError) as err:
            self._check_aborted()
            reason = getattr(err, "strerror", None) or err
            raise ServerUnreachable(f"Cannot reach the DiffusionXRay server at {self.server_url} ({reason}); start "
                                    "it with `monailabel start_server --app monailabel_app --studies DIR` or fix "
                                    "the server URL.") from None
        finally:
            with self._lock:
                self._conn = None
            conn.close()

    def _check_aborted(self) -> None:
        if self._aborted:
            raise Cancelled("The request was cancelled.")

    def _get_json(self, selector: str) -> Any:
        data, _ = self._request("GET", selector)
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise DXRClientError(f"The server at {self.server_url} answered {selector} with something that is not "
                                 "JSON; is this a MONAI Label server?") from None

    # API -------------------------------------------------------------------------------------------------------
    def info(self) -> Dict[str, Any]:
        """``GET /info/``: app name, tasks (``models``), trainers, and the app's options (``dxr``)."""
        return self._get_json("/info/")

    def tasks(self) -> List[str]:
        return sorted((self.info().get("models") or {}).keys())

    def studies(self) -> List[str]:
        """Study ids the server can use as ``image=`` (``GET /datastore/?output=all``)."""
        ds = self._get_json("/datastore/?output=all")
        objects = ds.get("objects", {}) if isinstance(ds, dict) else {}
        return sorted(objects)

    def infer(self, task: str, image: Optional[str] = None, file: Optional[str] = None,
              params: Optional[Mapping[str, Any]] = None, output: str = "all",
              progress: Optional[Callable[[int, int], None]] = None) -> InferResult:
        """Run ``task`` on a study id (``image``) or an uploaded file (``file``, a local path);
        ``progress(sent, total)`` follows the upload."""
        if bool(image) == bool(file):
            raise DXRClientError("Give exactly one input: a study id on the server (image=...) or a local CT/"
                                 "radiograph file to upload (file=...).")
        if output not in ("all", "json", "image"):
            raise DXRClientError(f"output must be all, json or image; got {output!r}.")
        query = {"output": output}
        if image:
            query["image"] = image
        selector = f"/infer/{quote(task, safe='')}?{urlencode(query)}"
        files = None
        if file:
            if not os.path.isfile(file):
                raise DXRClientError(f"The file to upload, {file!r}, does not exist; save the CT first.")
            with open(file, "rb") as fp:
                files = {"file": (upload_name(file), fp.read(), "application/octet-stream")}
        body, ctype = encode_multipart({"params": json.dumps(dict(params or {}))}, files)
        data, resp_type = self._request("POST", selector, body, {"Content-Type": ctype}, task=task,
                                        progress=progress)
        return self._parse_answer(task, data, resp_type)

    # datastore -------------------------------------------------------------------------------------------------
    def datastore_writable(self, info: Optional[Mapping[str, Any]] = None) -> bool:
        """Whether this server lets clients add studies (``--conf datastore_writes true``; ``/info`` says so)."""
        info = self.info() if info is None else info
        options = ((info or {}).get("dxr") or {}).get("options") or {}
        return bool(options.get("datastore_writes"))

    def upload_study(self, study_id: str, file: str,
                     progress: Optional[Callable[[int, int], None]] = None) -> str:
        """``PUT /datastore/?image=<study_id>`` with ``file``: the CT becomes a study that later requests name by
        id, so it crosses the network once. Needs a server started with ``--conf datastore_writes true`` (else
        :class:`ServerError` 403)."""
        if not os.path.isfile(file):
            raise DXRClientError(f"The file to upload, {file!r}, does not exist; save the CT first.")
        with open(file, "rb") as fp:
            files = {"file": (upload_name(file), fp.read(), "application/octet-stream")}
        body, ctype = encode_multipart({"params": "{}"}, files)
        self._request("PUT", f"/datastore/?{urlencode({'image': study_id})}", body, {"Content-Type": ctype},
                      task="datastore upload", progress=progress)
        return study_id

    def drr(self, image: Optional[str] = None, file: Optional[str] = None, **params: Any) -> InferResult:
        """CT -> DRR (params: view, size, kvp, nodules, seed, ... see monailabel_app/lib/infers/drr.py)."""
        return self.infer(TASK_DRR, image=image, file=file, params=drop_none(params))

    def drr_enhance(self, image: Optional[str] = None, file: Optional[str] = None, **params: Any) -> InferResult:
        """CT -> DRR -> DDPM-HQ enhanced, or radiograph -> enhanced (params: sampler, steps, scale, + drr's)."""
        return self.infer(TASK_ENHANCE, image=image, file=file, params=drop_none(params))

    # answer ----------------------------------------------------------------------------------------------------
    def _parse_answer(self, task: str, data: bytes, content_type: str) -> InferResult:
        ctype = content_type.lower()
        if ctype.startswith("multipart/"):
            parts = decode_multipart(data, content_type)
            if "params" not in parts:
                raise DXRClientError(f"The server's answer to '{task}' has no result JSON part; parts: "
                                     f"{sorted(parts)}.")
            result = json.loads(parts["params"]["data"].decode("utf-8") or "{}")
            image_path = None
            if "image" in parts:
                image_path = self._save(parts["image"]["data"], parts["image"].get("filename") or "result.nrrd")
            return InferResult(task, result if isinstance(result, dict) else {"result": result}, image_path)
        if ctype.startswith("application/json") or data[:1] in (b"{", b"["):
            result = json.loads(data.decode("utf-8") or "{}")
            if isinstance(result, str):  # MONAI Label may answer a JSON-encoded JSON string
                result = json.loads(result)
            return InferResult(task, result if isinstance(result, dict) else {"result": result}, None)
        return InferResult(task, {}, self._save(data, "result.nrrd"))  # output=image

    def _save(self, data: bytes, filename: str) -> str:
        suffix = ".nrrd"
        for s in _KNOWN_SUFFIXES:
            if filename.lower().endswith(s):
                suffix = s
                break
        fd, path = tempfile.mkstemp(prefix="dxr-result-", suffix=suffix, dir=self.tmpdir)
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
        return path


def file_digest(path: str, chunk: int = 1 << 22) -> str:
    """SHA-1 of a file's bytes (hex): names an uploaded CT by its content, so the same CT is uploaded once."""
    h = hashlib.sha1()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def drop_none(params: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
