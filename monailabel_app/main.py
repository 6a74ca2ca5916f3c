"""DiffusionXRay MONAI Label app: chest CT -> DRR (with optional nodules) -> DDPM-HQ enhanced radiograph.

Start it with::

    monailabel start_server --app monailabel_app --studies STUDIES [--conf KEY VALUE ...]

Tasks: ``drr`` and ``drr_enhance`` (``POST /infer/{task}``), ``ddpm_hq_finetune`` (``POST /train/ddpm_hq_finetune``).
Everything real is a call into ``dxr_core``; this file wires the tasks to the server. In server mode it starts the
inference worker pool (:mod:`lib.workers`) and puts the app's checked routes (:mod:`lib.api`) in front of MONAI
Label's. See ``monailabel_app/README.md`` (its "Security" section says what a client can and cannot do).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import shutil
import sys
from typing import Any, Dict

try:
    import dxr_core  # noqa: F401  (installed with `pip install -e .` by scripts/setup)
except ImportError:  # running from a checkout without the editable install: the repository root holds dxr_core
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import dxr_core  # noqa: F401

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

from dxr_core.errors import DXRError
from lib.configs import AppConfig, ConfigError
from lib.datastore import StudiesDatastore, StudyNotFound
from lib.infers import DRRTask, EnhanceTask
from lib.infers.common import CTCache, http_error, release_memory
from lib.trainers import DDPMHQFineTune

logger = logging.getLogger(__name__)

#: extra study file types next to MONAI Label's defaults (NIfTI, NRRD, PNG, ...)
EXTRA_EXTENSIONS = ["*.mha"]  # DICOM series folders are added by StudiesDatastore


class DiffusionXRayApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        try:
            self.cfg = AppConfig.from_conf(conf, app_dir)
        except ConfigError as err:  # stop start-up with the sentence, not a traceback into pydantic
            logger.error(str(err))
            raise SystemExit(f"monailabel_app: {err}") from None
        self.ct_cache = CTCache(self.cfg.ct_cache)
        self.tmp_dir = os.path.join(self.cfg.work_dir, "tmp")
        self.pool = None
        self.routes = None
        logger.info(f"DiffusionXRay options: {self.cfg.to_dict()}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="DiffusionXRay",
            description="Chest CT to digitally reconstructed radiographs (DRR), synthetic lung nodules with "
            "exact labels, and DDPM-HQ diffusion enhancement / 2x super-resolution.",
            version=dxr_core.__version__,
            labels=["nodule"],
        )

    # --- MONAI Label hooks -------------------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()  # DICOMweb / XNAT / DSA: MONAI Label's own
        extensions = list(dict.fromkeys([*settings.MONAI_LABEL_DATASTORE_FILE_EXT, *EXTRA_EXTENSIONS]))
        return StudiesDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            writes=self.cfg.datastore_writes,
        )

    def init_infers(self):
        return {
            "drr": DRRTask(self.cfg, self.ct_cache),
            "drr_enhance": EnhanceTask(self.cfg, self.ct_cache),
        }

    def init_trainers(self):
        return {"ddpm_hq_finetune": DDPMHQFineTune(self.cfg)}

    def init_scoring_methods(self):
        return {}

    def on_init_complete(self):
        """Server mode only (MONAI Label's start-up hook): worker pool + the app's routes in front of MONAI Label's."""
        super().on_init_complete()
        from monailabel.app import app as fastapi_app

        from lib.api import install
        from lib.workers import InferencePool

        if self.app_dir not in sys.path:  # worker processes import this app's `lib` package (spawn copies sys.path)
            sys.path.insert(0, self.app_dir)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # uploads / results left by a killed server
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        self.pool = InferencePool(self.cfg.to_dict(), self.tmp_dir, self.cfg.workers, self.cfg.max_queue)
        atexit.register(self.pool.close)
        self.routes = install(self, self.pool, fastapi_app)
        logger.info(f"DiffusionXRay: {self.cfg.workers} inference worker(s), queue {self.cfg.max_queue}, "
                    f"limit {self.cfg.max_seconds:g} s per request; datastore writes "
                    f"{'on' if self.cfg.datastore_writes else 'off'}")

    def validate_infer(self, model: str, params: Dict[str, Any]) -> None:
        """Check a request's values against the task and this server's limits (dxr_core OptionError -> 422)."""
        from dxr_core.params import DRRParams, parse_enhance
        from lib.infers.enhance import check_work, checkpoint_facts

        p = DRRParams.from_request(params, self.cfg.max_size)
        if model == "drr_enhance":
            task: EnhanceTask = self._infers["drr_enhance"]
            path = task._require_model()
            e = parse_enhance(params, self.cfg.sampler, self.cfg.steps, self.cfg.max_steps)
            T, (d_sampler, d_steps) = checkpoint_facts(path)
            sampler, steps = e["sampler"] or d_sampler, e["steps"] or d_steps  # None: the model's defaults
            evaluations = steps if sampler != "ddpm" else T
            # the output size of a CT input is known now; a radiograph's is checked by the worker after reading it
            check_work(evaluations, (round(p.size[0] * e["scale"]), round(p.size[1] * e["scale"])), self.cfg)

    def infer(self, request, datastore=None):
        """Direct (non-HTTP) inference, e.g. MONAI Label's batch runner: the image must be a study id."""
        request = dict(request)
        request["save_label"] = False
        try:
            ds = datastore if datastore else self.datastore()
            image = request.get("image")
            request["image"] = ds.resolve(image) if hasattr(ds, "resolve") else image
            request["dxr_from_datastore"] = True
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except StudyNotFound as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        except DXRError as err:
            logger.info(f"Refused {request.get('model')!r} request: {err}")
            raise http_error(err) from None
        except MONAILabelException as err:
            code = 404 if err.error == MONAILabelError.INVALID_INPUT else 500
            raise HTTPException(status_code=code, detail=err.msg) from None
        except concurrent.futures.TimeoutError:
            raise HTTPException(status_code=504, detail="Inference took too long; ask for a smaller size or fewer "
                                "steps.") from None
        finally:
            release_memory()

    def bundle_path(self, model):
        # Called synchronously by /train, /batch/infer and /scoring before the background job starts: an unknown
        # task name is refused here with a 404 instead of failing later inside the job.
        if model and model not in self._trainers and model not in self._infers:
            raise HTTPException(
                status_code=404,
                detail=f"No task named {model!r}; training tasks: {', '.join(self._trainers) or 'none'}, "
                f"inference tasks: {', '.join(self._infers)}.",
            )
        return super().bundle_path(model)

    def info(self):
        from lib.api import scrub_json

        meta = super().info()
        meta["dxr"] = {"options": self.cfg.public_dict(), "enhancer": self._infers["drr_enhance"].model_status()}
        roots = [self.app_dir, os.path.realpath(self.app_dir), self.studies, os.path.realpath(self.studies),
                 self.cfg.model_dir, self.cfg.work_dir, os.path.expanduser("~")]
        return scrub_json(meta, roots)  # /info never shows a server path


