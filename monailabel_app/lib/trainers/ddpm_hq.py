"""``ddpm_hq_finetune``: fine-tune the served DDPM-HQ enhancer on the radiographs stored in the datastore.

Started with ``POST /train/ddpm_hq_finetune`` (JSON body: the parameters below, checked before the job starts: a
bad one is answered 422 and nothing runs); MONAI Label runs it in a background process (``GET /train/`` shows its
status and log, ``DELETE /train/`` stops it).

Every 2-D study (DICOM DX/CR, PNG, 2-D NRRD ...) is a high-quality target; its low-quality partner is made by
``dxr_core``'s degradation. The radiographs are split into training and validation images (every fifth, at least
one, when there are two or more; with a single radiograph validation uses that image and the stats say so).

Each run gets a fresh folder ``<model_dir>/runs/<run id>`` (its pairs, checkpoints and stats); ``resume: true``
continues the newest run instead. When training ends, the new model and the served model enhance the same
validation windows (same sampler, steps and seed); the new model is published to
``<model_dir>/ddpm_hq_finetuned.pt`` (which ``drr_enhance`` then serves) only if its PSNR is higher, otherwise the
served model stays and the stats say why. The stats (``/info`` -> ``train_stats``) carry the keys MONAI Label's
Slicer plugin reads (``epoch``, ``total_epochs``, ``best_metric``, ``total_time``) and no server paths.

Parameters: ``steps`` (optimiser steps, default 200), ``batch_size`` (4), ``lr`` (5e-5), ``crop`` (training crop
in pixels, 128, clipped to the smallest radiograph), ``seed`` (0), ``init`` (model id to start from: ``served``
(default), ``finetuned`` or ``shipped``), ``resume`` (false), ``val_steps`` (sampler steps of the validation, 10).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any, Dict, List, Mapping

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from dxr_core.errors import DXRError, InputError, ModelError, OptionError

from ..configs import AppConfig
from dxr_core.io.kinds import input_kind
from dxr_core.params import as_bool, as_choice, as_float, as_int, param

logger = logging.getLogger(__name__)

STATS_NAME = "ddpm_hq_finetuned.json"
INIT_IDS = ("served", "finetuned", "shipped")
PARAM_KEYS = ("steps", "batch_size", "lr", "crop", "seed", "init", "resume", "val_steps")
#: keys MONAI Label adds to a training request on its own (not the client's)
SERVER_KEYS = ("model", "bundle_path", "device", "description", "multi_gpu", "gpus", "local_rank")
VAL_WINDOW = 128  # validation windows (HQ pixels): small enough that comparing two models costs seconds on a CPU


class NoTrainingData(InputError):
    """The datastore holds no radiograph to train on (answered 409: fix the datastore, not the request)."""

    http_code = 409


class DDPMHQFineTune(TrainTask):
    def __init__(self, cfg: AppConfig):
        super().__init__("Fine-tune the DDPM-HQ enhancer on the radiographs in the datastore (2-D studies).")
        self.cfg = cfg

    def config(self) -> Dict[str, Any]:
        return {"steps": 200, "batch_size": 4, "lr": 5e-5, "crop": 128, "seed": 0, "init": "served",
                "resume": False}

    def stats(self) -> Dict[str, Any]:
        try:
            with open(os.path.join(self.cfg.model_dir, STATS_NAME), encoding="utf-8") as fp:
                return json.load(fp)
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------------------------------------------------
    def model_path(self, model_id: str) -> str | None:
        """Server path of a model id (``served``: what ``drr_enhance`` uses now); None when not installed."""
        if model_id == "served":
            return self.cfg.served_model()[1]
        path = self.cfg.model_paths().get(model_id)
        return path if path and os.path.isfile(path) else None

    def runs_dir(self) -> str:
        return os.path.join(self.cfg.model_dir, "runs")

    def latest_run(self) -> str | None:
        try:
            runs = sorted(e.name for e in os.scandir(self.runs_dir()) if e.is_dir())
        except OSError:
            return None
        return runs[-1] if runs else None

    def validate(self, request: Mapping[str, Any], datastore: Datastore | None = None) -> Dict[str, Any]:
        """The checked parameters of a request (OptionError -> 422; no radiographs -> 409), defaults filled in."""
        unknown = sorted(str(k) for k in request if k not in PARAM_KEYS and k not in SERVER_KEYS)
        if unknown:
            raise OptionError(f"Unknown training parameter(s) {', '.join(map(repr, unknown))}; the known ones are "
                              f"{', '.join(PARAM_KEYS)}.")
        p = {
            "steps": as_int(param(request, "steps", 200), "steps", 1, 1_000_000),
            "batch_size": as_int(param(request, "batch_size", 4), "batch_size", 1, 256),
            "lr": as_float(param(request, "lr", 5e-5), "lr", 0.0, 1.0, lo_open=True),
            "crop": as_int(param(request, "crop", 128), "crop", 8, 4096),
            "seed": as_int(param(request, "seed", 0), "seed", 0, 2**31 - 1),
            "init": as_choice(param(request, "init", "served"), "init", INIT_IDS),
            "resume": as_bool(param(request, "resume", False), "resume"),
            "val_steps": as_int(param(request, "val_steps", 10), "val_steps", 1, self.cfg.max_steps),
        }
        if self.model_path(p["init"]) is None:
            raise OptionError(f"'init': the model {p['init']!r} is not installed on this server; use one of "
                              f"{', '.join(i for i in INIT_IDS if self.model_path(i))}.")
        if p["resume"] and self.latest_run() is None:
            raise OptionError("'resume': there is no earlier run to resume; start a new one (resume false).")
        if datastore is not None and not self.radiographs(datastore):
            raise NoTrainingData("The datastore holds no radiographs (2-D studies) to fine-tune on; add DICOM DX/CR, "
                                 "PNG or 2-D NRRD radiographs to the studies folder and start training again.")
        return p

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
        p = self.validate(request, datastore)
        images = self.radiographs(datastore)
        init = self.model_path(p["init"])
        served = self.model_path("served")
        if p["resume"]:
            run_id = self.latest_run()
        else:
            run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        work = os.path.join(self.runs_dir(), run_id)
        resumed = p["resume"] and os.path.isdir(os.path.join(work, "run", "checkpoints"))
        os.makedirs(work, exist_ok=True)
        logger.info(f"Training DDPM-HQ run {run_id} ({'resumed' if resumed else 'new'}, from {p['init']}) on "
                    f"{len(images)} radiograph(s) for {p['steps']} step(s)")
        result = run_training(images, init, work, steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"],
                              crop=p["crop"], seed=p["seed"], device=self.cfg.device)
        verdict = compare_models(result["model_trained"], served, result["val_pairs"], steps=p["val_steps"],
                                 seed=p["seed"], device=self.cfg.device, where=result["val_where"])
        published = verdict["psnr_trained"] > verdict["psnr_served"]
        if published:
            from dxr_core.io.atomic import atomic_path

            with atomic_path(self.cfg.finetuned_path()) as tmp:
                shutil.copyfile(result["model_trained"], tmp)
            reason = (f"published: validation PSNR {verdict['psnr_trained']:.2f} dB > served model's "
                      f"{verdict['psnr_served']:.2f} dB")
        else:
            reason = (f"not published, the served model stays: validation PSNR {verdict['psnr_trained']:.2f} dB is "
                      f"not above the served model's {verdict['psnr_served']:.2f} dB")
        total = round(time.time() - start, 1)
        summary = result["summary"]
        stats = {
            "run": run_id, "resumed": bool(resumed), "initialised_from": p["init"], "published": published,
            "reason": reason, "images": len(images), "train_images": result["train_images"],
            "val_images": result["val_images"], "validation": verdict["where"],
            "psnr_served": round(verdict["psnr_served"], 3), "psnr_trained": round(verdict["psnr_trained"], 3),
            "psnr_bicubic": round(verdict["psnr_bicubic"], 3),
            "epoch": int(summary.get("iterations", 0)), "total_epochs": p["steps"],
            "best_metric": round(max(verdict["psnr_trained"], verdict["psnr_served"]), 3),
            "total_time": total, "crop": result["crop"], "device": self.cfg.device,
            **{k: p[k] for k in ("steps", "batch_size", "lr", "seed", "val_steps")},
        }
        from dxr_core.io.atomic import write_text_atomic

        write_text_atomic(os.path.join(work, "stats.json"), json.dumps(stats, indent=2))
        write_text_atomic(os.path.join(self.cfg.model_dir, STATS_NAME), json.dumps(stats, indent=2))
        logger.info(f"DDPM-HQ training done: {json.dumps(stats)}")
        return stats


def _degrade(hq, seed: int):
    """The LQ partner of a radiograph, by dxr_core's degradation (2x smaller)."""
    from dxr_core.data.synthetic import degrade

    return degrade(hq, scale=2, seed=seed)


def run_training(images: List[str], init: str, work: str, *, steps: int, batch_size: int, lr: float, crop: int,
                 seed: int, device: str) -> Dict[str, Any]:
    """Pairs (radiograph = HQ, its degraded copy = LQ) -> ``dxr_core.engines.train_ddpm_hq`` with the network and
    diffusion set-up of ``init``; returns the new checkpoint, the validation pairs and the engine's summary."""
    import numpy as np

    from dxr_core.data.pairs import write_image
    from dxr_core.diffusion.enhancer import load_enhancer
    from dxr_core.engines import TrainConfig, train_ddpm_hq
    from dxr_core.io.radiograph import read_radiograph

    served = load_enhancer(init, device="cpu")
    multiple = max(1, int(served.multiple))
    val_idx = set(range(4, len(images), 5)) if len(images) >= 2 else set()
    if len(images) >= 2 and not val_idx:
        val_idx = {len(images) - 1}
    pairs, val_pairs = os.path.join(work, "pairs"), os.path.join(work, "val_pairs")
    smallest = None
    n_train = n_val = 0
    for k, path in enumerate(images):
        hq, _spacing, _meta = read_radiograph(path)
        rows, cols = (hq.shape[0] // (2 * multiple)) * 2 * multiple, (hq.shape[1] // (2 * multiple)) * 2 * multiple
        if min(rows, cols) < 2 * multiple:
            logger.warning(f"Skipping study {k}: {hq.shape} is too small to train on")
            continue
        hq = np.ascontiguousarray(hq[:rows, :cols])
        name = f"{k:05d}.png"
        lq = _degrade(hq, seed + k)
        is_val = k in val_idx
        for root, keep in ((pairs, not is_val), (val_pairs, is_val or not val_idx)):
            if keep and not os.path.isfile(os.path.join(root, "hq", name)):  # a resumed run keeps its pairs
                write_image(lq, os.path.join(root, "lq", name))
                write_image(hq, os.path.join(root, "hq", name))
        n_val += int(is_val)
        n_train += int(not is_val)
        if not is_val:
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
        raise ModelError("Training finished without writing its model; see the training log.")
    where = "held-out radiograph(s)" if val_idx else "the training radiograph (the datastore holds only one)"
    return {"model_trained": model, "crop": crop, "val_pairs": val_pairs, "summary": summary,
            "train_images": n_train, "val_images": n_val if val_idx else 0, "val_where": where}


def compare_models(trained: str, served: str, val_pairs: str, *, steps: int, seed: int, device: str,
                   where: str = "held-out radiograph(s)") -> Dict[str, Any]:
    """PSNR of the trained and the served model (and bicubic) on the same validation windows, same sampler/seed."""
    import numpy as np
    import torch

    from dxr_core.data.pairs import find_pairs, read_image
    from dxr_core.diffusion.enhancer import load_enhancer, upsample_condition
    from dxr_core.metrics.image import psnr

    files = find_pairs(val_pairs)
    models = {"trained": load_enhancer(trained, device=device), "served": load_enhancer(served, device=device)}
    m = max(e.multiple for e in models.values())
    scores: Dict[str, list] = {"trained": [], "served": [], "bicubic": []}
    for lq_path, hq_path in files:
        lq, hq = read_image(lq_path), read_image(hq_path)
        size = min(VAL_WINDOW, hq.shape[0], hq.shape[1]) // (2 * m) * 2 * m
        r0, c0 = (hq.shape[0] - size) // 2 // 2 * 2, (hq.shape[1] - size) // 2 // 2 * 2  # a central window
        hq_w = hq[r0:r0 + size, c0:c0 + size]
        lq_w = lq[r0 // 2:(r0 + size) // 2, c0 // 2:(c0 + size) // 2]
        for name, enh in models.items():
            out = enh.enhance(lq_w, scale=2, sampler="ddim", steps=steps, seed=seed, tile=None)
            score = psnr(np.nan_to_num(out, nan=0.0), hq_w)
            scores[name].append(score if np.isfinite(score) else 0.0)  # a model that outputs NaN scores 0 dB
        bic = upsample_condition(torch.from_numpy(lq_w)[None, None] * 2 - 1, (size, size))[0, 0].numpy()
        scores["bicubic"].append(psnr((bic + 1) / 2, hq_w))
    mean = {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}
    return {"psnr_trained": mean["trained"], "psnr_served": mean["served"], "psnr_bicubic": mean["bicubic"],
            "where": f"{len(files)} central {VAL_WINDOW}-px window(s) of {where}" if files else "none"}
