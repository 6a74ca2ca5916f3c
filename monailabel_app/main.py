"""DiffusionXRay MONAI Label app: chest CT -> DRR (with optional nodules) -> DDPM-HQ enhanced radiograph.

Start it with::

    monailabel start_server --app monailabel_app --studies STUDIES [--conf KEY VALUE ...]

Tasks: ``drr`` and ``drr_enhance`` (``POST /infer/{task}``), ``ddpm_hq_finetune`` (``POST /train/ddpm_hq_finetune``).
Everything real is a call into ``dxr_core``; this file wires the tasks to the server and turns ``dxr_core``
errors into 4xx answers whose text is the error's sentence. See ``monailabel_app/README.md``.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
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
from lib.datastore import StudiesDatastore
from lib.infers import DRRTask, EnhanceTask
from lib.infers.common import CTCache, NotFound, http_error, release_memory
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

    def infer(self, request, datastore=None):
        """MONAI Label's infer, with a study check first and ``dxr_core`` errors answered as 4xx."""
        request = dict(request)
        request.pop("dxr_from_datastore", None)  # set below, never by a client
        request["save_label"] = False  # a DRR is not a segmentation of its CT: never store it as the CT's label
        try:
            self._check_study(request, datastore)
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except DXRError as err:
            logger.info(f"Refused {request.get('model')!r} request: {err}")
            raise http_error(err) from None
        except MONAILabelException as err:
            code = 404 if err.error == MONAILabelError.INVALID_INPUT else 500
            raise HTTPException(status_code=code, detail=err.msg) from None
        except concurrent.futures.TimeoutError:
            raise HTTPException(
                status_code=504,
                detail=f"Inference took longer than {settings.MONAI_LABEL_INFER_TIMEOUT} s; ask for a smaller "
                "size or fewer steps, or raise MONAI_LABEL_INFER_TIMEOUT.",
            ) from None
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
        meta = super().info()
        meta["dxr"] = {"options": self.cfg.to_dict(), "enhancer": self._infers["drr_enhance"].model_status()}
        return meta

    # --- helpers ------------------------------------------------------------------------------------------------
    def _check_study(self, request: Dict[str, Any], datastore=None) -> None:
        image = request.get("image")
        if not isinstance(image, str) or not image or os.path.exists(image):
            return  # uploaded file (a temporary path) or a session: nothing to look up
        ds = datastore if datastore else self.datastore()
        request["dxr_from_datastore"] = True  # its CT may stay in the small in-memory cache
        if not ds.get_image_uri(image):
            raise NotFound(
                f"Unknown study {image!r}: it is not in the studies folder; list the study ids with GET /datastore/"
                " or upload the CT as a file."
            )
