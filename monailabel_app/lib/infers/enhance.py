"""``drr_enhance`` task: CT study -> DRR -> DDPM-HQ enhanced (super-resolved) radiograph, or an uploaded /
stored radiograph -> enhanced radiograph.

Request parameters (besides all ``drr`` parameters, used when the input is a CT):

===========  ===================================================================================================
sampler      ddim (default, eta 0), dpmpp (DPM-Solver++ 2M), or ddpm (ancestral over all T steps: slow)
steps        sampler steps / network evaluations (default 10; 1 .. --conf max_steps)
scale        output size / input size (default 2: 512 -> 1024); 1 .. 4
seed         noise seed (default 0): same seed, same output
tile         largest network tile in pixels (default 512; tiles are blended, the noise field is global)
temperature  scale of the initial noise, 0 .. 1 (default: the model's, its model card; 0: the least added noise)
===========  ===================================================================================================

The model is, in order: ``--conf model_path``; the fine-tuned checkpoint written by ``/train/ddpm_hq_finetune``
into ``--conf model_dir``; the weights shipped in ``dxr_core/weights``. With none installed the request is answered
404 with a sentence saying so (the server keeps serving DRRs).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Tuple

import numpy as np

from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS
from dxr_core.errors import InputError, OptionError
from dxr_core.nodules.rescale import rescale_projection
from dxr_core.params import ENHANCE_KEYS, DRRParams, parse_enhance  # noqa: F401  (ENHANCE_KEYS: request contract)
from dxr_core.pipeline import drr_result_json, enhance_drr, render

from ..configs import AppConfig
from .common import (
    CTCache,
    DXRInferTask,
    NoModel,
    image_path,
    input_kind,
    jsonable,
    release_memory,
    write_result_nrrd,
)
from .drr import nrrd_meta

logger = logging.getLogger(__name__)



_CHECKPOINT_FACTS: dict = {}


def checkpoint_facts(path: str) -> tuple[int, tuple[str, int]]:
    """T of a checkpoint (the number of evaluations of the full ancestral sampler) and its default (sampler, steps),
    read once per file version."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _CHECKPOINT_FACTS:
        import torch

        from dxr_core.diffusion.enhancer import sampling_defaults

        ck = torch.load(path, map_location="cpu", weights_only=True)
        _CHECKPOINT_FACTS[key] = (int(ck["diffusion"]["num_train_timesteps"]), sampling_defaults(ck.get("meta")))
    return _CHECKPOINT_FACTS[key]


def check_work(evaluations: int, out_size: Tuple[int, int], cfg: AppConfig) -> None:
    """Refuse (422, before any work) an enhancement that would cost more than this server allows."""
    if evaluations > cfg.max_steps:
        raise OptionError(f"This request runs {evaluations} network evaluations, above this server's limit of "
                          f"{cfg.max_steps}; use sampler ddim or dpmpp with fewer 'steps'.")
    work = evaluations * out_size[0] * out_size[1] / 1e6
    if work > cfg.max_work:
        raise OptionError(f"This enhancement would cost {work:.0f} (network evaluations x output megapixels: "
                          f"{evaluations} x {out_size[0]} x {out_size[1]}), above this server's limit of "
                          f"{cfg.max_work:g}; lower 'steps', 'size' or 'scale' (or raise --conf max_work).")


class _EnhancerCache:
    """One loaded enhancer (the last used), reloaded when the checkpoint file changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key: Tuple | None = None
        self._enhancer = None

    def get(self, path: str, device: str):
        from dxr_core.diffusion.enhancer import load_enhancer

        st = os.stat(path)
        key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, device)
        with self._lock:
            if self._key != key:
                self._enhancer, self._key = None, None
                release_memory(full=True)
                self._enhancer = load_enhancer(path, device=device)
                self._key = key
            return self._enhancer


class EnhanceTask(DXRInferTask):
    """Radiograph (or CT -> DRR) -> DDPM-HQ enhanced radiograph, calling ``dxr_core.diffusion`` directly."""

    DIMENSION = 2
    DESCRIPTION = ("DDPM-HQ diffusion enhancement and super-resolution of a radiograph (uploaded file or study), or of "
                   "the DRR of a CT study (all `drr` params apply). Params: sampler (ddim, dpmpp, ddpm), steps, scale "
                   "(default 2), seed, tile, output_dtype.")

    def default_config(self) -> dict:
        sampler, steps = DEFAULT_SAMPLER, DEFAULT_STEPS
        try:  # the model's own defaults (its meta "sampling"), unless the server sets them
            sampler, steps = checkpoint_facts(self._require_model())[1]
        except Exception:  # no model yet: requests will get the clear error; show the package defaults
            pass
        return {"sampler": self.cfg.sampler or sampler, "steps": self.cfg.steps or steps, "scale": 2, "seed": 0}

    def __init__(self, cfg: AppConfig, ct_cache: CTCache):
        super().__init__(cfg, ct_cache)
        self._enhancers = _EnhancerCache()
        self._run_lock = threading.Lock()  # one enhancement at a time: bounds memory on a shared server

    # is_valid: True (the base) even without weights; requests then get a clear 404 (see model_path)

    # model ----------------------------------------------------------------------------------------------------
    def model_path(self) -> str | None:
        return self.cfg.served_model()[1]

    def get_path(self, validate=True):
        return self.model_path()

    def model_id(self, path: str | None) -> str | None:
        """What a client is told about a checkpoint: "conf" (--conf model_path), "finetuned" or "shipped"."""
        return next((k for k, p in self.cfg.model_paths().items() if p == path), None)

    def model_status(self) -> Dict[str, Any]:
        path = self.model_path()
        return {"installed": path is not None, "model": self.model_id(path), "device": self.cfg.device}

    def _require_model(self) -> str:
        path = self.model_path()
        if path is None:
            raise NoModel(
                "No DDPM-HQ enhancement model is installed on this server (no --conf model_path, no fine-tuned model, "
                "no shipped weights); install the shipped weights, restart with --conf model_path FILE.pt, or "
                "fine-tune one with POST /train/ddpm_hq_finetune. DRRs (task 'drr') still work."
            )
        return path

    # stages -------------------------------------------------------------------------------------------------
    def _parse(self, data):
        data["dxr_model_path"] = self._require_model()
        data["dxr_enhance"] = parse_enhance(data, self.cfg.sampler, self.cfg.steps, self.cfg.max_steps)
        # DRR params (used for CT input) + output_dtype
        data["dxr_params"] = DRRParams.from_request(data, self.cfg.max_size)
        return data

    def _load(self, data):
        path = image_path(data)
        kind = input_kind(path)
        data["dxr_kind"] = kind
        if kind == "ct":
            vol = self.ct_cache.get(path) if data.get("dxr_from_datastore") else self.ct_cache.read(path)
            p: DRRParams = data["dxr_params"]
            drr, labels = render(vol, p)
            data["drr"], data["nodule_labels"] = drr, labels
            data["lq"], data["lq_spacing"] = drr.image, tuple(drr.geometry.pixel_spacing_mm)
        else:
            from dxr_core.io.radiograph import read_radiograph

            try:
                img, spacing, meta = read_radiograph(path)
            except InputError:
                raise
            except Exception as err:
                raise InputError(f"Could not read {os.path.basename(path)!r} as a radiograph ({type(err).__name__}); "
                                 "upload a DICOM DX/CR, PNG, TIFF or 2-D NRRD image.") from err
            data["lq"], data["lq_spacing"], data["lq_meta"] = img, spacing, meta
        rows, cols = data["lq"].shape
        e = data["dxr_enhance"]
        out = (round(rows * e["scale"]), round(cols * e["scale"]))
        limit = 2 * self.cfg.max_size
        if max(out) > limit:
            raise OptionError(f"The enhanced image would be {out[0]} x {out[1]} pixels, above this server's limit of "
                              f"{limit}; lower 'scale' or 'size' (or raise --conf max_size).")
        return data

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        e = data["dxr_enhance"]
        enhancer = self._enhancers.get(data["dxr_model_path"], self.cfg.device)
        e["sampler"], e["steps"] = enhancer.resolve_sampling(e["sampler"], e["steps"])  # None: the model's default
        e["temperature"] = enhancer.resolve_temperature(e.get("temperature"))
        evaluations = enhancer.evaluations(e["sampler"], e["steps"])
        rows, cols = data["lq"].shape
        check_work(evaluations, (round(rows * e["scale"]), round(cols * e["scale"])), self.cfg)
        kw = dict(scale=e["scale"], sampler=e["sampler"], steps=e["steps"], seed=e["seed"], tile=e["tile"],
                  temperature=e["temperature"])
        lq = data.pop("lq")
        with self._run_lock:
            if data["dxr_kind"] == "ct":  # the pipeline's step: labels and projection follow the enhanced grid
                out, data["grid"], data["nodule_labels"] = enhance_drr(data["drr"], data["nodule_labels"], enhancer,
                                                                        **kw)
            else:
                out = enhancer.enhance(lq, **kw)
        e["network_evaluations"] = evaluations
        data[self.output_label_key] = np.asarray(out, dtype=np.float32)
        return data

    def writer(self, data, extension=None, dtype=None):
        p: DRRParams = data["dxr_params"]
        e = data["dxr_enhance"]
        img = data.pop(self.output_label_key)
        rows, cols = img.shape
        lq_spacing = data.get("lq_spacing")
        enh = dict(e)
        enh["model"] = self.model_id(data["dxr_model_path"])  # an id, never a server path
        if data["dxr_kind"] == "ct":
            drr, g = data.pop("drr"), data.pop("grid")  # g: the same detector with the enhanced pixels
            lq_rows, lq_cols = drr.geometry.size
            result = drr_result_json(drr, data.pop("nodule_labels"), p, g.pixel_spacing_mm, (rows, cols),
                                     "drr_enhance")
            result["geometry"] = jsonable(g.to_dict())
            result["projection_matrix"] = jsonable(np.asarray(g.projection_matrix))
            result["lq"] = {"size": [int(lq_rows), int(lq_cols)],
                            "pixel_spacing_mm": jsonable(list(drr.geometry.pixel_spacing_mm)),
                            "projection_matrix": jsonable(np.asarray(drr.geometry.projection_matrix))}
            spacing = g.pixel_spacing_mm
            meta = nrrd_meta(g, "drr_enhance")
        else:
            lq_meta = data.pop("lq_meta", {})
            lq_rows, lq_cols = round(rows / e["scale"]), round(cols / e["scale"])
            sy, sx = e["scale"], e["scale"]
            spacing = (lq_spacing[0] / sy, lq_spacing[1] / sx) if lq_spacing else None
            result = {
                "task": "drr_enhance",
                "input": {"kind": "radiograph", "format": lq_meta.get("format"),
                          "pixel_spacing_mm": jsonable(list(lq_spacing)) if lq_spacing else None},
                "image": {"size": [int(rows), int(cols)],
                          "pixel_spacing_mm": jsonable(list(spacing)) if spacing else None,
                          "dtype": p.output_dtype,
                          "value_range": [0, 65535] if p.output_dtype == "uint16" else [0.0, 1.0],
                          "format": "nrrd", "photometric": "MONOCHROME2 (bone bright)"},
            }
            side = lq_meta.get("sidecar") or {}
            if side.get("projection_matrix") is not None:  # a DRR with its sidecar: carry the projection over
                result["projection_matrix"] = rescale_projection(side["projection_matrix"], sy, sx)
            meta = {"dxr_task": "drr_enhance"}
        result["enhance"] = jsonable(enh)
        path = write_result_nrrd(img, spacing or (1.0, 1.0), p.output_dtype, meta)
        return path, result
