"""``ddpm_hq_finetune``: fine-tune the DDPM-HQ enhancer on the radiographs stored in the datastore.

Started with ``POST /train/ddpm_hq_finetune`` (JSON body: the parameters below); MONAI Label runs it in a
background process (``GET /train/`` shows its status and log lines, ``DELETE /train/`` stops it). The radiographs
(every 2-D study: DICOM DX/CR, PNG, 2-D NRRD ...) are the high-quality targets; ``dxr_core`` synthesises their
low-quality partners and runs the training. The result is written atomically to ``<model_dir>/ddpm_hq_finetuned.pt``,
which ``drr_enhance`` then uses (unless ``--conf model_path`` pins another checkpoint).

Parameters: ``steps`` (optimiser steps, default 200), ``batch_size`` (default 4), ``lr`` (default 5e-5),
``crop`` (training crop in pixels, default 128), ``seed`` (default 0), ``init`` (checkpoint to start from;
default: the model ``drr_enhance`` uses now).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from dxr_core.errors import DXRError, InputError, ModelError

from ..configs import AppConfig
from ..configs.settings import FINETUNED_NAME
from ..infers.common import as_float, as_int, input_kind, param

logger = logging.getLogger(__name__)

STATS_NAME = "ddpm_hq_finetuned.json"


class DDPMHQFineTune(TrainTask):
    def __init__(self, cfg: AppConfig):
        super().__init__("Fine-tune the DDPM-HQ enhancer on the radiographs in the datastore (2-D studies).")
        self.cfg = cfg

    def config(self) -> Dict[str, Any]:
        return {"steps": 200, "batch_size": 4, "lr": 5e-5, "crop": 128, "seed": 0}

    def stats(self) -> Dict[str, Any]:
        path = os.path.join(self.cfg.model_dir, STATS_NAME)
        try:
            with open(path, encoding="utf-8") as fp:
                return json.load(fp)
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------------------------------------------------
    def radiographs(self, datastore: Datastore) -> List[str]:
        """Paths of the 2-D studies (radiographs) in the datastore; CTs are skipped."""
        out = []
        for image_id in datastore.list_images():
            uri = datastore.get_image_uri(image_id)
            if not uri or not os.path.exists(uri):
                continue
            try:
                if input_kind(uri) == "radiograph":
                    out.append(uri)
            except DXRError as err:
                logger.warning(f"Skipping study {image_id!r}: {err}")
        return sorted(out)

    def __call__(self, request, datastore: Datastore):
        start = time.time()
        steps = as_int(param(request, "steps", 200), "steps", 1, 1_000_000)
        batch = as_int(param(request, "batch_size", 4), "batch_size", 1, 256)
        lr = as_float(param(request, "lr", 5e-5), "lr", 0.0, 1.0, lo_open=True)
        crop = as_int(param(request, "crop", 128), "crop", 16, 4096)
        seed = as_int(param(request, "seed", 0), "seed", 0, 2**31 - 1)
        images = self.radiographs(datastore)
        if not images:
            raise InputError("The datastore holds no radiographs (2-D studies) to fine-tune on; add DICOM DX/CR, "
                             "PNG or 2-D NRRD radiographs to the studies folder and start training again.")
        init = param(request, "init")
        if init is None:
            from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS

            for p in (self.cfg.model_path, self.cfg.finetuned_path(), str(DEFAULT_WEIGHTS)):
                if p and os.path.isfile(p):
                    init = p
                    break
        if init is None or not os.path.isfile(str(init)):
            raise ModelError("No DDPM-HQ checkpoint to fine-tune from: install the shipped weights or pass "
                             "'init' (a checkpoint path on the server).")
        out = os.path.join(self.cfg.model_dir, FINETUNED_NAME)
        os.makedirs(self.cfg.model_dir, exist_ok=True)
        logger.info(f"Fine-tuning {init} on {len(images)} radiograph(s) for {steps} step(s) -> {out}")
        result = finetune(images=images, init=str(init), out=out, steps=steps, batch_size=batch, lr=lr, crop=crop,
                          seed=seed, device=self.cfg.device, work_dir=os.path.join(self.cfg.model_dir, "finetune_run"))
        stats = {
            "model": out,
            "init": str(init),
            "images": len(images),
            "steps": steps,
            "batch_size": batch,
            "lr": lr,
            "crop": crop,
            "seed": seed,
            "device": self.cfg.device,
            "seconds": round(time.time() - start, 1),
            "result": result,
        }
        from dxr_core.io.atomic import write_text_atomic

        write_text_atomic(os.path.join(self.cfg.model_dir, STATS_NAME), json.dumps(stats, indent=2, default=str))
        logger.info(f"Fine-tuning done: {stats}")
        return stats


def finetune(**kwargs) -> Dict[str, Any]:
    """The diffusion helper's fine-tuning entry point (``dxr_core``)."""
    raise ModelError("This dxr_core has no DDPM-HQ fine-tuning function yet; training from the server is not "
                     "available in this version.")
