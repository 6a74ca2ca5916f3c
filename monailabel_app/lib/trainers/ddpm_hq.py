"""``ddpm_hq_finetune``: train the DDPM-HQ enhancer on the radiographs stored in the datastore.

Started with ``POST /train/ddpm_hq_finetune`` (JSON body: the parameters below); MONAI Label runs it in a
background process (``GET /train/`` shows its status and log lines, ``DELETE /train/`` stops it). Every 2-D study
(DICOM DX/CR, PNG, 2-D NRRD ...) is a high-quality target; its low-quality partner is made by ``dxr_core``'s
degradation, and ``dxr_core.engines.train_ddpm_hq`` trains with the network and diffusion set-up of the model the
server uses now. The result is copied atomically to ``<model_dir>/ddpm_hq_finetuned.pt``, which ``drr_enhance``
then uses (unless ``--conf model_path`` pins another checkpoint); ``<model_dir>/ddpm_hq_finetuned.json`` (also in
``/info`` under ``train_stats``) records the run.

Initial weights: the served model (or ``init``) is the starting point, passed as ``TrainConfig.init``, so this is
true fine-tuning; the stats record it under ``initialised_from``.

Parameters: ``steps`` (optimiser steps, default 200), ``batch_size`` (default 4), ``lr`` (default 5e-5),
``crop`` (training crop in pixels, default 128, clipped to the smallest radiograph), ``seed`` (default 0),
``init`` (checkpoint whose set-up/weights to use; default: the model ``drr_enhance`` uses now).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any, Dict, List

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from dxr_core.errors import DXRError, InputError, ModelError

from ..configs import AppConfig
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
        crop = as_int(param(request, "crop", 128), "crop", 8, 4096)
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
            raise ModelError("No DDPM-HQ checkpoint to fine-tune: install the shipped weights, start the server with "
                             "--conf model_path FILE.pt, or pass 'init' (a checkpoint path on the server).")
        os.makedirs(self.cfg.model_dir, exist_ok=True)
        work = os.path.join(self.cfg.model_dir, "finetune_run")
        out = self.cfg.finetuned_path()
        logger.info(f"Training DDPM-HQ ({init}) on {len(images)} radiograph(s) for {steps} step(s) -> {out}")
        result = run_training(images, str(init), work, steps=steps, batch_size=batch, lr=lr, crop=crop, seed=seed,
                              device=self.cfg.device)
        from dxr_core.io.atomic import atomic_path, write_text_atomic

        with atomic_path(out) as tmp:
            shutil.copyfile(result["model_trained"], tmp)
        stats = {"model": out, "images": len(images), "steps": steps, "batch_size": batch, "lr": lr,
                 "seed": seed, "device": self.cfg.device, "seconds": round(time.time() - start, 1), **result}
        write_text_atomic(os.path.join(self.cfg.model_dir, STATS_NAME), json.dumps(stats, indent=2, default=str))
        logger.info(f"DDPM-HQ training done: {json.dumps(stats, default=str)}")
        return stats


def _degrade(hq, seed: int):
    """The LQ partner of a radiograph, by dxr_core's degradation (2x smaller)."""
    from dxr_core.data.synthetic import degrade

    return degrade(hq, scale=2, seed=seed)


def run_training(images: List[str], init: str, work: str, *, steps: int, batch_size: int, lr: float, crop: int,
                 seed: int, device: str) -> Dict[str, Any]:
    """Pairs (radiograph = HQ, its degraded copy = LQ) -> ``dxr_core.engines.train_ddpm_hq`` with the network and
    diffusion set-up of the served model ``init``; returns the run summary (``model`` = the new checkpoint)."""
    import numpy as np

    from dxr_core.data.pairs import write_image
    from dxr_core.diffusion.enhancer import load_enhancer
    from dxr_core.engines import TrainConfig, train_ddpm_hq
    from dxr_core.io.radiograph import read_radiograph

    served = load_enhancer(init, device="cpu")
    multiple = max(1, int(served.multiple))
    pairs = os.path.join(work, "pairs")
    smallest = None
    for k, path in enumerate(images):
        hq, _spacing, _meta = read_radiograph(path)
        rows, cols = (hq.shape[0] // (2 * multiple)) * 2 * multiple, (hq.shape[1] // (2 * multiple)) * 2 * multiple
        if min(rows, cols) < 2 * multiple:
            logger.warning(f"Skipping {path}: {hq.shape} is too small to train on")
            continue
        hq = np.ascontiguousarray(hq[:rows, :cols])
        name = f"{k:05d}.png"
        write_image(_degrade(hq, seed + k), os.path.join(pairs, "lq", name))
        write_image(hq, os.path.join(pairs, "hq", name))
        smallest = min(smallest or 10**9, rows, cols)
    if smallest is None:
        raise InputError("Every radiograph in the datastore is too small to train on; add larger radiographs.")
    crop = max(multiple, min(int(crop), smallest) // multiple * multiple)
    d = served.diffusion
    kwargs: Dict[str, Any] = dict(pairs=pairs, out=os.path.join(work, "run"), preset=served.model_config.to_dict(),
                                  iters=steps, batch_size=batch_size, crop=crop, lr=lr, seed=seed,
                                  schedule=d.schedule, timesteps=d.num_train_timesteps, prediction=d.prediction,
                                  residual=d.residual, progress=False, init=init)
    if device.startswith("cuda"):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device.split(":")[1] if ":" in device else "0")
    summary = train_ddpm_hq(TrainConfig(**kwargs))
    model = summary.get("model") or os.path.join(work, "run", "model.pt")
    if not os.path.isfile(model):
        raise ModelError(f"Training finished without writing {model}; see the training log.")
    return {"model_trained": model, "initialised_from": init,
            "architecture_of": init, "crop": crop, "pairs": pairs, "summary": summary}
