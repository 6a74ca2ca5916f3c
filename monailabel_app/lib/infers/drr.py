"""``drr`` task: CT study -> digitally reconstructed radiograph (optionally with inserted lung nodules).

Request parameters (all optional; JSON body ``params`` of ``POST /infer/drr?image=<study>``):

=================  ==========================================================================================
preset             pa-chest, ap-portable or lateral: clinical acquisition (scatter, grid, CsI detector, processing)
                   and CT clean-up, as ``dxr drr --preset``; default pa-chest; "none" gives the raw DRR
view               the preset's (pa for pa-chest and none), ap, lateral/llat, rlat
size               detector pixels: 512 (default) or [rows, cols]; 16 .. --conf max_size
pixel_spacing      detector pixel pitch in mm (default: the preset's 43 cm field / size; with preset none: fit the
                   whole CT on the detector)
sid, sad           source-image and source-axis distances in mm (default: the preset's, 1800 / 1650 for pa-chest;
                   1500 / 1000 with preset none)
rotation           gantry rotation in degrees about the patient's long axis (default 0)
mode               physics: poly (tube spectrum at ``kvp``) or mono (one ``energy_kev``)
kvp, energy_kev    tube voltage (40..150 kV) / mono energy (10..200 keV)
dose               photons per detector pixel for quantum noise; 0 or absent: noise-free
seed               noise (and default nodule) seed, default 0
output_dtype       float32 (default, [0, 1]) or uint16 (round(value * 65535))
nodules            number of random lung nodules to insert in 3-D (0 .. 20)
nodule_points      [[x, y, z], ...] LPS mm: also one nodule centred on each point (must lie inside a lung)
nodule_type        kind(s) to draw from: solid, part_solid, ggo, calcified (one or a list; default all;
                   nodules at points: solid, or the listed kinds in turn)
nodule_shape       shape(s) to draw from: sphere, ellipsoid, lobulated, spiculated (default all; points: sphere)
nodule_size        diameter in mm, or [min, max] (3 .. 30, default [6, 20]; points use the middle)
nodule_seed        seed for nodule placement/shape (default: ``seed``)

Nodule semantics are those of ``dxr drr --nodules/--nodule-at/--nodule-kinds/--nodule-shapes/--nodule-diameter/
--nodule-seed``, so the same request gives the same pixels and labels as the command line.
=================  ==========================================================================================

The result is a 2-D NRRD (pixel spacing set, (rows, cols) = ``size``) and JSON with the projection matrix, the
geometry, the physics and one label per nodule, as in ``dxr drr``'s COCO file: ``bbox`` (COCO [x, y, w, h], pixel
(r, c) covers [c, c+1) x [r, r+1)), ``centre_px`` (col, row; pixel centres at integers), ``centre_lps``,
``segmentation`` (the projected mask, COCO uncompressed RLE over the whole image), ``area``, ``visibility``
(contrast-to-noise ratio) with ``contrast``/``noise``, ``category``, ``diameter_mm``, ``shape``, ``in_image``.
"""
from __future__ import annotations

import logging
import os
from typing import Dict

import numpy as np

from dxr_core.drr.presets import DEFAULT_PRESET
from dxr_core.errors import InputError
from dxr_core.params import DRR_KEYS, DRRParams
from dxr_core.pipeline import drr_result_json, render

from .common import DXRInferTask, image_path, input_kind, write_result_nrrd

logger = logging.getLogger(__name__)

def nrrd_meta(geometry, task: str) -> Dict[str, str]:
    pm = np.asarray(geometry.projection_matrix, dtype=np.float64)
    return {
        "dxr_task": task,
        "dxr_view": str(geometry.view),
        "dxr_pixel_spacing_mm": " ".join(f"{v:.9g}" for v in geometry.pixel_spacing_mm),
        "dxr_projection_matrix": " ".join(f"{v:.12g}" for v in pm.ravel()),
    }


# ----------------------------------------------------------------------------------------------------------------
# the MONAI Label task
# ----------------------------------------------------------------------------------------------------------------
class DRRTask(DXRInferTask):
    """CT study -> DRR; the BasicInferTask stages are overridden to call ``dxr_core`` directly."""

    DIMENSION = 3
    DESCRIPTION = ("CT -> digitally reconstructed radiograph (float32 or uint16 NRRD with pixel spacing) + JSON with "
                   "the projection matrix; optional synthetic lung nodules with exact 2-D labels. Params: "
                   + ", ".join(DRR_KEYS) + ".")

    def default_config(self) -> dict:
        return {"preset": DEFAULT_PRESET, "size": 512, "mode": "poly", "seed": 0, "nodules": 0,
                "output_dtype": "float32"}

    # stages -------------------------------------------------------------------------------------------------
    def _parse(self, data):
        data["dxr_params"] = DRRParams.from_request(data, self.cfg.max_size)  # before reading anything: fail fast
        return data

    def _load(self, data):
        path = image_path(data)
        if input_kind(path) != "ct":
            raise InputError(f"{os.path.basename(path)!r} is a single 2-D image (a radiograph), not a CT; the 'drr' "
                             "task needs a CT (DICOM series, or a 3-D NIfTI/NRRD/MHA); "
                             "use 'drr_enhance' for radiographs.")
        data["volume"] = self.ct_cache.get(path) if data.get("dxr_from_datastore") else self.ct_cache.read(path)
        return data

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        p: DRRParams = data["dxr_params"]
        drr, labels = render(data.pop("volume"), p)
        data["drr"], data["nodule_labels"] = drr, labels
        data[self.output_label_key] = drr.image
        return data

    def writer(self, data, extension=None, dtype=None):
        p: DRRParams = data["dxr_params"]
        drr = data["drr"]
        g = drr.geometry
        path = write_result_nrrd(drr.image, g.pixel_spacing_mm, p.output_dtype, nrrd_meta(g, "drr"))
        result = drr_result_json(drr, data["nodule_labels"], p, g.pixel_spacing_mm, g.size, "drr")
        for k in ("drr", "nodule_labels", self.output_label_key):
            data.pop(k, None)
        return path, result
