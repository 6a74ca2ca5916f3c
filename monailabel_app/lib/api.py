"""The app's own HTTP routes, installed in front of MONAI Label's (same paths, same clients).

MONAI Label 0.8.5's handlers trust what a client sends: ``image`` may be any server path, uploads go to
``/tmp`` under a client-chosen suffix and stay there when a request fails, datastore ids and tags are joined into
paths unchecked, params that are not a JSON object answer 500, and inference runs on the event loop. The routes
here replace those handlers (``install`` puts them first in the router, so they answer instead):

- ``POST /infer/{model}``: a request contract (params a JSON object of known keys with checked values: else 422
  naming the key), ``image`` a study id (anything else: the one 404 message of a missing study), a size-limited
  upload saved in the app's private temporary folder and removed on every path, the work done by the worker pool
  (:mod:`lib.workers`: 503 when full, 504 after ``--conf max_seconds``), the result kept as a label of its study;
- ``POST /train/{model}`` and ``POST /train/``: parameters checked (422) before any job starts;
- ``PUT``/``DELETE /datastore/...``: refused (403) unless ``--conf datastore_writes true``; then ids and tags are
  plain names and uploads follow the infer rules;
- model upload/delete, sessions, batch and WSI inference: not offered by this app (403).
Every error text is scrubbed of server paths.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import uuid
from typing import Any, AsyncIterator, Dict, Iterable, Mapping, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

from dxr_core.errors import DXRError, OptionError

from .datastore import UNKNOWN_STUDY, BadName, StudyNotFound, WritesDisabled, require_writes, valid_name
from .infers.common import http_status
from .infers.drr import DRR_KEYS
from .infers.enhance import ENHANCE_KEYS
from .workers import QueueFull

logger = logging.getLogger(__name__)

TASK_KEYS = {"drr": frozenset(DRR_KEYS), "drr_enhance": frozenset(DRR_KEYS) | frozenset(ENHANCE_KEYS)}
#: keys MONAI Label's own clients add to every request (MONAILabelClient: client_id); accepted and ignored
CLIENT_KEYS = frozenset({"client_id"})
OUTPUTS = ("all", "image", "json")
MAX_PARAMS_BYTES = 1 << 20  # a params JSON (or a train body) larger than 1 MiB is not a parameter set


class BodyTooLarge(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
_PATH_RE = re.compile(r"(?<![\w.:/])(?:/[^\s'\"/,;)\]]+)+/?")


def scrub(text: str, roots: Iterable[str] = ()) -> str:
    """``text`` without server paths: known roots removed, any other absolute path cut to its last name."""
    for root in sorted({r for r in roots if r and r != "/"}, key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", "").replace(root, "")
    return _PATH_RE.sub(_cut_path, text)


#: first names of this server's own URL paths, which messages may name (they are not server files)
API_PREFIXES = ("/datastore", "/infer", "/train", "/info", "/model", "/session", "/batch", "/logs", "/docs")


def _cut_path(m: "re.Match[str]") -> str:
    token = m.group(0)
    if token.startswith(API_PREFIXES):
        return token
    return os.path.basename(token.rstrip("/")) or "(path)"


def scrub_json(obj: Any, roots: Iterable[str]) -> Any:
    roots = list(roots)
    if isinstance(obj, str):
        return scrub(obj, roots) if "/" in obj else obj
    if isinstance(obj, dict):
        return {k: scrub_json(v, roots) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_json(v, roots) for v in obj]
    return obj


def _error(code: int, detail: str, roots: Iterable[str] = ()) -> HTTPException:
    return HTTPException(status_code=code, detail=scrub(detail, roots))


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > limit:
            raise BodyTooLarge()
        yield chunk


async def read_form(request: Request, limit: int, max_files: int = 2, max_fields: int = 8) -> Dict[str, Any]:
    """The request's form (multipart or urlencoded), refusing bodies over ``limit`` bytes (413) and malformed
    ones (422). Uploaded parts are spooled to anonymous temporary files that vanish when closed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge()
        except ValueError:
            raise HTTPException(status_code=400, detail="The Content-Length header is not a number.") from None
    ctype = request.headers.get("content-type", "")
    stream = _limited(request.stream(), limit)
    try:
        if ctype.startswith("multipart/form-data"):
            form = await MultiPartParser(request.headers, stream, max_files=max_files, max_fields=max_fields).parse()
        elif ctype.startswith("application/x-www-form-urlencoded"):
            form = await FormParser(request.headers, stream).parse()
        else:
            body = b"".join([c async for c in stream])
            if body.strip():
                raise HTTPException(status_code=422, detail="Send the request as multipart/form-data (a 'params' "
                                    "field holding a JSON object, and optionally a 'file'), as MONAI Label clients do.")
            return {}
    except BodyTooLarge:
        raise
    except (MultiPartException, ValueError, UnicodeDecodeError, KeyError) as err:
        raise HTTPException(status_code=422, detail=f"The request body is not a valid form ({err}).") from None
    items: Dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in items:
            for v in (items[key], value):
                if isinstance(v, UploadFile):
                    await v.close()
            raise HTTPException(status_code=422, detail=f"The form field {key!r} is given twice; give it once.")
        items[key] = value
    return items


async def _close_uploads(form: Mapping[str, Any]) -> None:
    for v in form.values():
        if isinstance(v, UploadFile):
            await v.close()


def parse_params(raw: Any, what: str = "params") -> Dict[str, Any]:
    """A client's params: a JSON object (422 otherwise)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise OptionError(f"'{what}' must be a JSON object, e.g. {{\"size\": 512}}.")
    if len(raw) > MAX_PARAMS_BYTES:
        raise OptionError(f"'{what}' is larger than 1 MiB; send only the parameters.")
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise OptionError(f"'{what}' is not valid JSON ({err.__class__.__name__}: {err}); send a JSON object, "
                          "e.g. {\"size\": 512}.") from None
    if not isinstance(value, dict):
        raise OptionError(f"'{what}' must be a JSON object (got a JSON {type(value).__name__}); e.g. "
                          "{\"size\": 512}.")
    return value


def check_keys(params: Mapping[str, Any], allowed: Iterable[str], task: str) -> None:
    allowed = sorted(set(allowed))
    unknown = sorted(str(k) for k in params if k not in allowed)
    if unknown:
        raise OptionError(f"Unknown parameter(s) for task {task!r}: {', '.join(map(repr, unknown))}; the known ones "
                          f"are {', '.join(allowed)}.")


def safe_upload_name(filename: Optional[str]) -> str:
    """A local file name for an upload: a fresh stem plus the client's suffixes when they are plain."""
    base = os.path.basename(filename or "")
    suffix = "".join(s for s in re.findall(r"\.[A-Za-z0-9]{1,8}", base)[-2:]).lower()
    return f"upload{suffix}"


# ----------------------------------------------------------------------------------------------------------------
# the routes
# ----------------------------------------------------------------------------------------------------------------
class AppRoutes:
    """Binds the routes to one app instance (its config, datastore, worker pool and private folders)."""

    def __init__(self, app, pool):
        self.app, self.pool, self.cfg = app, pool, app.cfg
        self.tmp_dir = app.tmp_dir

    @property
    def roots(self) -> list:
        ds = self.app.datastore()
        return [os.path.realpath(self.app.app_dir), self.app.app_dir, getattr(ds, "root", ""), self.app.studies,
                os.path.realpath(self.app.studies), self.tmp_dir, self.cfg.model_dir, os.path.expanduser("~")]

    def _fail(self, err: BaseException) -> HTTPException:
        if isinstance(err, HTTPException):
            return err
        if isinstance(err, BodyTooLarge):
            return _error(413, f"The request is larger than this server's upload limit of {self.cfg.max_upload_mb:g} "
                               "MiB; send a smaller file (or start the server with a larger --conf max_upload_mb).")
        if isinstance(err, StudyNotFound):
            return _error(404, UNKNOWN_STUDY)
        if isinstance(err, WritesDisabled):
            return _error(403, str(err))
        if isinstance(err, BadName):
            return _error(422, str(err))
        if isinstance(err, QueueFull):
            return _error(503, str(err))
        if isinstance(err, (TimeoutError, asyncio.TimeoutError)):
            return _error(504, f"The request ran longer than this server's limit of {self.cfg.max_seconds:g} s and was "
                               "stopped; ask for a smaller size or fewer steps.")
        if isinstance(err, DXRError):
            return _error(http_status(err), str(err), self.roots)
        from pebble import ProcessExpired

        if isinstance(err, ProcessExpired):
            logger.error(f"Inference worker stopped: {err}")
            return _error(500, "The inference worker stopped unexpectedly (out of memory?); it has been replaced, "
                               "retry with a smaller request.")
        logger.exception("Unexpected error", exc_info=err)
        return _error(500, f"Internal error ({type(err).__name__}); the server log has the details.")

    def _new_tmp(self) -> str:
        path = os.path.join(self.tmp_dir, uuid.uuid4().hex)
        os.makedirs(path, mode=0o700)
        return path

    async def _save_upload(self, upload: UploadFile) -> tuple[str, str]:
        """Copy an upload into a fresh private folder; returns (folder, file). The caller removes the folder."""
        folder = self._new_tmp()
        path = os.path.join(folder, safe_upload_name(upload.filename))

        def copy():
            with open(path, "wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)

        try:
            await run_in_threadpool(copy)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            await upload.close()
        return folder, path

    # --- /infer ------------------------------------------------------------------------------------------------
    async def infer(self, request: Request, model: str, image: str = "", session_id: str = "",
                    output: Optional[str] = None):
        folder = None
        form: Dict[str, Any] = {}
        try:
            if model not in TASK_KEYS:
                raise HTTPException(status_code=404, detail=f"No inference task named {model[:64]!r}; the tasks are "
                                                            f"{', '.join(TASK_KEYS)}.")
            if output not in (None, "", *OUTPUTS):
                raise OptionError(f"'output' must be one of {', '.join(OUTPUTS)}.")
            if session_id:
                raise OptionError("Sessions are not used by this app: name a study with ?image=<id> or upload a "
                                  "file.")
            form = await read_form(request, self.cfg.max_upload_bytes)
            extra = sorted(set(form) - {"params", "file"})
            if extra:
                raise OptionError(f"Unknown form field(s) {', '.join(map(repr, extra))}; send 'params' (a JSON "
                                  "object) and optionally 'file'.")
            raw = form.get("params")
            if isinstance(raw, UploadFile):
                raw = await raw.read(MAX_PARAMS_BYTES + 1)
            params = {k: v for k, v in parse_params(raw).items() if k not in CLIENT_KEYS}
            check_keys(params, TASK_KEYS[model], model)
            self.app.validate_infer(model, params)  # values and limits: 422 before any work
            upload = form.get("file")
            if upload is not None and not isinstance(upload, UploadFile):
                raise OptionError("'file' must be an uploaded file (multipart/form-data).")
            if upload is not None and image:
                raise OptionError("Give either ?image=<study id> or an uploaded 'file', not both.")
            if upload is not None:
                folder, path = await self._save_upload(upload)
                study = None
            elif image:
                path = self.app.datastore().resolve(image)
                study = image
            else:
                raise OptionError("The request names no input: give ?image=<study id from GET /datastore/> or "
                                  "upload a file as 'file'.")
            job = dict(params, model=model, image=path, dxr_from_datastore=study is not None)
            result_file, result = await asyncio.wrap_future(self.pool.submit(model, job, self.cfg.max_seconds))
        except BaseException as err:
            await _close_uploads(form)
            if isinstance(err, asyncio.CancelledError):
                raise
            raise self._fail(err) from None
        finally:  # the upload is gone on every path (the worker has finished with it)
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        result = scrub_json(result, self.roots)
        if study is not None and self.cfg.save_results and result_file:
            try:
                info = json.loads(json.dumps(result))  # the datastore adds its own keys to the info it is given
                await run_in_threadpool(self.app.datastore().save_result, study, result_file, model, info)
                result["saved_as"] = {"label": study, "tag": model}
            except Exception as err:  # keeping a copy is a service, not the request: answer anyway
                logger.warning(f"Could not keep the {model} result of {study!r}: {err}")
        return self._respond(result_file, result, output or "all")

    def _respond(self, result_file: Optional[str], result: Dict[str, Any], output: str):
        cleanup = BackgroundTask(_remove, result_file) if result_file else None
        if output == "json" or not result_file:
            if result_file:
                _remove(result_file)
            return JSONResponse(result)
        if output == "image":
            return FileResponse(result_file, media_type="application/octet-stream",
                                filename=os.path.basename(result_file), background=cleanup)
        from requests_toolbelt import MultipartEncoder

        with open(result_file, "rb") as fp:
            data = fp.read()
        _remove(result_file)
        enc = MultipartEncoder(fields={"params": (None, json.dumps(result), "application/json"),
                                       "image": (os.path.basename(result_file), data, "application/octet-stream")})
        return Response(content=enc.to_string(), media_type=enc.content_type)

    # --- /train ------------------------------------------------------------------------------------------------
    async def _train_body(self, request: Request) -> Dict[str, Any]:
        body = b"".join([c async for c in _limited(request.stream(), MAX_PARAMS_BYTES)])
        return parse_params(body, "the training parameters (JSON body)")

    async def _train(self, request: Request, plan):
        """Read the JSON body, let ``plan(body) -> (fn, args)`` check it (in a worker thread: validation reads the
        datastore) and run ``fn(*args)``; one error mapping for both training routes."""
        try:
            body = await self._train_body(request)
            fn, args = await run_in_threadpool(plan, body)
            return await run_in_threadpool(fn, *args)
        except HTTPException:
            raise
        except BodyTooLarge:
            raise _error(413, "The training parameters are larger than 1 MiB.") from None
        except BaseException as err:
            raise self._fail(err) from None

    async def train_model(self, request: Request, model: str, enqueue: bool = False):
        if model not in self.app._trainers:  # before reading anything
            raise HTTPException(status_code=404, detail=f"No training task named {model[:64]!r}; training tasks: "
                                                        f"{', '.join(self.app._trainers)}.")

        def plan(body):
            from monailabel.endpoints.train import run_model

            params = self.app._trainers[model].validate(body, self.app.datastore())
            # run_sync is not offered: training always runs in MONAI Label's background process
            return run_model, (model, params, False, enqueue)

        return await self._train(request, plan)

    async def train_all(self, request: Request):
        def plan(body):
            from monailabel.endpoints.train import run

            for name, params in body.items():
                if name not in self.app._trainers:
                    raise OptionError(f"Unknown training task {str(name)[:64]!r}; training tasks: "
                                      f"{', '.join(self.app._trainers)}.")
                if not isinstance(params, dict):
                    raise OptionError(f"The parameters of {name!r} must be a JSON object.")
            checked = {name: trainer.validate(body.get(name, {}), self.app.datastore())
                       for name, trainer in self.app._trainers.items()}
            return run, (checked, False)

        return await self._train(request, plan)

    # --- /datastore writes -------------------------------------------------------------------------------------
    def _require_writes(self) -> None:  # before the body is read: a refused upload costs nothing
        require_writes(self.cfg.datastore_writes)

    async def _datastore_upload(self, request: Request, field: str, image_id: Optional[str], tag: Optional[str]):
        folder = None
        form: Dict[str, Any] = {}
        try:
            self._require_writes()
            form = await read_form(request, self.cfg.max_upload_bytes)
            extra = sorted(set(form) - {"params", field})
            if extra:
                raise OptionError(f"Unknown form field(s) {', '.join(map(repr, extra))}.")
            info = parse_params(form.get("params") if not isinstance(form.get("params"), UploadFile) else None)
            upload = form.get(field)
            if not isinstance(upload, UploadFile):
                raise OptionError(f"Upload the file as the form field {field!r}.")
            if not image_id:
                raise OptionError("Name the study with ?image=<id> (a plain name: letters, digits, '.', '_', '-').")
            if not valid_name(image_id) or (tag is not None and not valid_name(tag)):
                raise BadName("Image ids and label tags are plain names (letters, digits, '.', '_', '-'; no path "
                              "separators, no leading dot, no '..').")
            folder, path = await self._save_upload(upload)
            ds = self.app.datastore()
            if field == "file":
                out = await run_in_threadpool(ds.add_image, image_id, path, info)
                return {"image": out}
            label_id = await run_in_threadpool(ds.save_label, image_id, path, tag, info)
            return {"image": image_id, "label": label_id}
        except BaseException as err:
            await _close_uploads(form)
            if isinstance(err, asyncio.CancelledError):
                raise
            raise self._fail(err) from None
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    async def add_image(self, request: Request, image: Optional[str] = None):
        return await self._datastore_upload(request, "file", image, None)

    async def save_label(self, request: Request, image: str = "", tag: str = "final"):
        return await self._datastore_upload(request, "label", image, tag or "final")

    async def _change(self, method: str, *args, request: Optional[Request] = None):
        """A datastore change (``remove_*`` / ``update_*_info``): writes on, names checked by the datastore; an
        ``info`` form field (a JSON object) is appended to ``args`` when ``request`` is given."""
        try:
            self._require_writes()
            if request is not None:
                form = await read_form(request, MAX_PARAMS_BYTES)
                args = (*args, parse_params(form.get("info"), "info"))
            await run_in_threadpool(getattr(self.app.datastore(), method), *args)
            return {}
        except BaseException as err:
            raise self._fail(err) from None

    async def remove_image(self, id: str):
        return await self._change("remove_image", id)

    async def remove_label(self, id: str, tag: str):
        return await self._change("remove_label", id, tag)

    async def put_image_info(self, request: Request, image: str):
        return await self._change("update_image_info", image, request=request)

    async def put_label_info(self, request: Request, label: str, tag: str):
        return await self._change("update_label_info", label, tag, request=request)

    async def listing(self, output: Optional[str] = None):
        """MONAI Label's datastore listing, without server paths (its ``output=train`` lists full file paths)."""
        from monailabel.endpoints.datastore import ResultType, datastore

        try:
            kind = ResultType(output) if output else None
        except ValueError:
            raise _error(422, f"'output' must be one of {', '.join(t.value for t in ResultType)}.") from None
        return scrub_json(await run_in_threadpool(datastore, kind), self.roots)

    @staticmethod
    async def not_offered(request: Request):
        raise HTTPException(status_code=403, detail=f"{request.method} {request.url.path} is not offered by this app "
                                                    "(see monailabel_app/README.md for what it serves).")

    # --- wiring ------------------------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        user = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
        annotator = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
        admin = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
        r = APIRouter()

        async def infer(request: Request, model: str, image: str = "", session_id: str = "",
                        output: Optional[str] = None, user: User = user):
            return await self.infer(request, model, image, session_id, output)

        async def train_model(request: Request, model: str, enqueue: bool = False, user: User = admin):
            return await self.train_model(request, model, enqueue)

        async def train_all(request: Request, user: User = admin):
            return await self.train_all(request)

        async def add_image(request: Request, image: Optional[str] = None, user: User = annotator):
            return await self.add_image(request, image)

        async def save_label(request: Request, image: str = "", tag: str = "final", user: User = annotator):
            return await self.save_label(request, image, tag)

        async def remove_image(id: str, user: User = admin):
            return await self.remove_image(id)

        async def remove_label(id: str, tag: str, user: User = admin):
            return await self.remove_label(id, tag)

        async def put_image_info(request: Request, image: str, user: User = annotator):
            return await self.put_image_info(request, image)

        async def put_label_info(request: Request, label: str, tag: str, user: User = annotator):
            return await self.put_label_info(request, label, tag)

        async def listing(output: Optional[str] = None, user: User = user):
            return await self.listing(output)

        r.add_api_route("/infer/{model}", infer, methods=["POST"], summary="Run a DiffusionXRay inference task")
        r.add_api_route("/datastore/", listing, methods=["GET"], summary="Studies and labels of the datastore")
        r.add_api_route("/train/{model}", train_model, methods=["POST"], summary="Start a training task")
        r.add_api_route("/train/", train_all, methods=["POST"], include_in_schema=False)
        for path in ("/datastore/image", "/datastore/"):
            r.add_api_route(path, add_image, methods=["PUT"], include_in_schema=path.endswith("image"))
            r.add_api_route(path, remove_image, methods=["DELETE"], include_in_schema=path.endswith("image"))
        r.add_api_route("/datastore/label", save_label, methods=["PUT"])
        r.add_api_route("/datastore/label", remove_label, methods=["DELETE"])
        r.add_api_route("/datastore/image/info", put_image_info, methods=["PUT"])
        for path in ("/datastore/label/info", "/datastore/updatelabelinfo"):
            r.add_api_route(path, put_label_info, methods=["PUT"], include_in_schema=path.endswith("info"))
        for path, methods in (("/model/{model}", ["PUT", "DELETE"]), ("/session/", ["PUT"]),
                              ("/batch/infer/{model}", ["POST"]), ("/infer/wsi/{model}", ["POST"]),
                              ("/infer/wsi_v2/{model}", ["POST"])):
            r.add_api_route(path, self.not_offered, methods=methods, include_in_schema=False)
        return r


def _remove(path: Optional[str]) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def install(app, pool, fastapi_app) -> AppRoutes:
    """Put the app's routes in front of MONAI Label's in ``fastapi_app`` (a route matched earlier answers)."""
    routes = AppRoutes(app, pool)
    prefix = settings.MONAI_LABEL_API_STR or ""
    router = routes.router()
    new = APIRouter()
    new.include_router(router, prefix=prefix)
    fastapi_app.router.routes[0:0] = new.routes
    fastapi_app.openapi_schema = None  # rebuilt with our routes on the next /openapi.json
    return routes
