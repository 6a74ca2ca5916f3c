"""``drr`` task: CT study -> digitally reconstructed radiograph (optionally with inserted lung nodules).

Request parameters (all optional; JSON body ``params`` of ``POST /infer/drr?image=<study>``):

=================  ==========================================================================================
view               pa (default), ap, lateral/llat, rlat
size               detector pixels: 512 (default) or [rows, cols]; 16 .. --conf max_size
pixel_spacing      detector pixel pitch in mm (default: fit the whole CT on the detector)
sid, sad           source-image and source-axis distances in mm (default 1500, 1000)
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
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from dxr_core.errors import InputError, OptionError

from ..configs import AppConfig
from .common import (
    OUTPUT_DTYPES,
    CTCache,
    as_choice,
    as_float,
    as_int,
    as_points,
    as_size,
    image_path,
    input_kind,
    jsonable,
    param,
    write_result_nrrd,
)

logger = logging.getLogger(__name__)

#: every request key the ``drr`` task reads (aliases included); anything else is refused with 422
DRR_KEYS = ("view", "size", "pixel_spacing", "sid", "sad", "rotation", "mode", "kvp", "energy_kev", "dose", "seed",
            "output_dtype", "nodules", "nodule_count", "nodule_points", "nodule_at", "nodule_type", "nodule_types",
            "nodule_kind", "nodule_kinds", "nodule_shape", "nodule_shapes", "nodule_size", "nodule_diameter",
            "nodule_seed")
NODULE_TYPES = ("solid", "part_solid", "ggo", "calcified")
NODULE_SHAPES = ("sphere", "ellipsoid", "lobulated", "spiculated")
MAX_NODULES = 20


@dataclass
class DRRParams:
    """A validated DRR request (everything ``dxr_core`` needs, in its own units)."""

    view: str = "pa"
    size: Tuple[int, int] = (512, 512)
    pixel_spacing: float | None = None
    sid: float = 1500.0
    sad: float = 1000.0
    rotation: float = 0.0
    mode: str = "poly"  # the defaults of `dxr drr`, so both give the same pixels for the same request
    kvp: float = 120.0
    energy_kev: float | None = None
    dose: float | None = None
    seed: int = 0
    output_dtype: str = "float32"
    nodules: int = 0
    nodule_points: list | None = None
    nodule_types: list | None = None
    nodule_shapes: list | None = None
    nodule_size: Tuple[float, float] = (6.0, 20.0)
    nodule_seed: int | None = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_request(cls, req: Mapping[str, Any], cfg: AppConfig) -> "DRRParams":
        from dxr_core.drr.geometry import VIEWS

        p = cls()
        p.view = as_choice(param(req, "view", "pa"), "view", VIEWS)
        p.size = as_size(param(req, "size", 512), "size", 16, cfg.max_size)
        if param(req, "pixel_spacing") is not None:
            p.pixel_spacing = as_float(param(req, "pixel_spacing"), "pixel_spacing", 0.0, 20.0, lo_open=True)
        p.sid = as_float(param(req, "sid", 1500.0), "sid", 100.0, 10000.0)
        p.sad = as_float(param(req, "sad", 1000.0), "sad", 50.0, 10000.0)
        if p.sad >= p.sid:
            raise OptionError(f"Parameter 'sad' ({p.sad:g} mm) must be smaller than 'sid' ({p.sid:g} mm): the "
                              "patient sits between the source and the detector.")
        p.rotation = as_float(param(req, "rotation", 0.0), "rotation", -360.0, 360.0)
        p.mode = as_choice(param(req, "mode", "poly"), "mode", ("mono", "poly"))
        p.kvp = as_float(param(req, "kvp", 120.0), "kvp", 40.0, 150.0)
        if param(req, "energy_kev") is not None:
            if p.mode != "mono":
                raise OptionError("Parameter 'energy_kev' applies to mode 'mono' only; drop it or add \"mode\": \"mono\".")
            p.energy_kev = as_float(param(req, "energy_kev"), "energy_kev", 10.0, 200.0)
        if param(req, "dose") is not None:
            p.dose = as_float(param(req, "dose"), "dose", 0.0, 1e9)
        p.seed = as_int(param(req, "seed", 0), "seed", 0, 2**31 - 1)
        p.output_dtype = as_choice(param(req, "output_dtype", "float32"), "output_dtype", OUTPUT_DTYPES)

        points = param(req, "nodule_points", aliases=("nodule_at",))
        if points is not None:
            pts = as_points(points, "nodule_points")
            p.nodule_points = pts.tolist()
        count = param(req, "nodules", aliases=("nodule_count",))
        if count is not None:
            p.nodules = as_int(count, "nodules", 0, MAX_NODULES)
        if p.nodules + len(p.nodule_points or []) > MAX_NODULES:
            raise OptionError(f"At most {MAX_NODULES} nodules per image; ask for fewer 'nodules' / 'nodule_points'.")
        p.nodule_types = _names(param(req, "nodule_type", aliases=("nodule_types", "nodule_kind", "nodule_kinds")),
                                "nodule_type", NODULE_TYPES)
        p.nodule_shapes = _names(param(req, "nodule_shape", aliases=("nodule_shapes",)), "nodule_shape",
                                 NODULE_SHAPES)
        size = param(req, "nodule_size", aliases=("nodule_diameter",))
        if size is not None:
            if isinstance(size, str) and "," in size:
                size = size.split(",")
            if isinstance(size, (list, tuple)):
                if len(size) != 2:
                    raise OptionError(f"Parameter 'nodule_size' must be a diameter in mm or [min, max]; got {size!r}.")
                lo = as_float(size[0], "nodule_size[0]", 3.0, 30.0)
                hi = as_float(size[1], "nodule_size[1]", 3.0, 30.0)
                if lo > hi:
                    raise OptionError(f"Parameter 'nodule_size' [min, max] has min {lo:g} > max {hi:g}.")
                p.nodule_size = (lo, hi)
            else:
                d = as_float(size, "nodule_size", 3.0, 30.0)
                p.nodule_size = (d, d)
        if param(req, "nodule_seed") is not None:
            p.nodule_seed = as_int(param(req, "nodule_seed"), "nodule_seed", 0, 2**31 - 1)
        return p

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return jsonable(d)


# ----------------------------------------------------------------------------------------------------------------
# the calls into dxr_core
# ----------------------------------------------------------------------------------------------------------------
def make_physics(p: DRRParams):
    from dxr_core.drr.physics import physics_from_options

    return physics_from_options(p.mode, p.kvp, p.dose or None, p.energy_kev)


def _names(value: Any, key: str, allowed: Sequence[str]) -> list | None:
    """One name, a comma list or a JSON list -> validated list (None: all allowed, the default)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [str(v).strip().lower() for v in items if str(v).strip()]
    if not items or items == ["random"]:
        return None
    return [as_choice(v, key, allowed) for v in items]


def make_nodules(volume, p: DRRParams) -> list:
    """The nodules of a request, exactly as ``dxr drr``'s nodule hook places them (points first, then random)."""
    if not p.nodules and not p.nodule_points:
        return []
    from dxr_core.nodules import LungDistance, Nodule, check_inside_lung, random_nodules

    seed = p.seed if p.nodule_seed is None else p.nodule_seed
    lung = LungDistance(volume)
    out = []
    if p.nodule_points:
        pts = np.asarray(p.nodule_points, dtype=np.float64)
        ijk = volume.world_to_index(pts)
        shape = np.asarray(volume.shape_xyz, dtype=np.float64)
        outside = [i for i, q in enumerate(ijk) if np.any(q < -0.5) or np.any(q > shape - 0.5)]
        if outside:
            corners = volume.corners_lps()
            raise OptionError(
                f"nodule_points {[p.nodule_points[i] for i in outside]} lie outside the CT (LPS bounds "
                f"{np.round(corners.min(0), 1).tolist()} .. {np.round(corners.max(0), 1).tolist()} mm); "
                "give points inside the lungs."
            )
        kinds = p.nodule_types or ["solid"]
        lo, hi = p.nodule_size
        for i, q in enumerate(pts):
            n = Nodule(kind=kinds[i % len(kinds)], diameter_mm=(lo + hi) / 2.0, center_lps=tuple(q),
                       shape=(p.nodule_shapes or ["sphere"])[0], seed=seed + i)
            check_inside_lung(n, lung)
            out.append(n)
    out += random_nodules(volume, p.nodules, seed=seed, kinds=p.nodule_types, shapes=p.nodule_shapes,
                          diameter_range=tuple(p.nodule_size), lung=lung)
    return out


def render(volume, p: DRRParams):
    """CT (HU) + request -> (DRR, nodule labels)."""
    from dxr_core.drr import make_geometry, render_drr

    geometry = make_geometry(
        volume, view=p.view, sid_mm=p.sid, sad_mm=p.sad, size=p.size, pixel_spacing_mm=p.pixel_spacing,
        rotation_deg=p.rotation,
    )
    drr = render_drr(volume, geometry, make_physics(p), seed=p.seed)
    labels: list = []
    nodules = make_nodules(volume, p)
    if nodules:
        from dxr_core.nodules import add_nodules_to_drr

        drr, _with_nodules, labels = add_nodules_to_drr(drr, volume, nodules, seed=p.seed)
        labels = [{k: v for k, v in lab.items() if k != "time_ms"} for lab in labels]
    return drr, labels


def drr_result_json(drr, labels: Sequence[Any], p: DRRParams, pixel_spacing, size, task: str) -> Dict[str, Any]:
    side = jsonable(drr.sidecar())
    out: Dict[str, Any] = {"task": task}
    out.update(side)
    out["projection_matrix"] = jsonable(np.asarray(drr.geometry.projection_matrix))
    out["image"] = {
        "size": [int(size[0]), int(size[1])],  # rows, cols
        "pixel_spacing_mm": [float(pixel_spacing[0]), float(pixel_spacing[1])],  # row, col (DICOM order)
        "dtype": p.output_dtype,
        "value_range": [0, 65535] if p.output_dtype == "uint16" else [0.0, 1.0],
        "format": "nrrd",
        "photometric": "MONOCHROME2 (bone bright)",
    }
    out["nodules"] = jsonable(list(labels))
    out["request"] = p.to_dict()
    return out


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
class DRRTask(BasicInferTask):
    """CT study -> DRR; the BasicInferTask stages are overridden to call ``dxr_core`` directly."""

    def __init__(self, cfg: AppConfig, ct_cache: CTCache):
        super().__init__(
            path=None,
            network=None,
            type=InferType.OTHERS,
            labels=["nodule"],
            dimension=3,
            description="CT -> digitally reconstructed radiograph (float32 or uint16 NRRD with pixel spacing) + JSON "
            "with the projection matrix; optional synthetic lung nodules with exact 2-D labels. Params: view, size, "
            "pixel_spacing, sid, sad, rotation, mode, kvp, energy_kev, dose, seed, output_dtype, nodules, "
            "nodule_points, nodule_type, nodule_shape, nodule_size, nodule_seed.",
            config={"view": "pa", "size": 512, "mode": "poly", "kvp": 120, "dose": 0, "seed": 0, "nodules": 0,
                    "output_dtype": "float32"},
        )
        self.cfg = cfg
        self.ct_cache = ct_cache

    def is_valid(self) -> bool:
        return True

    # stages -------------------------------------------------------------------------------------------------
    def pre_transforms(self, data=None):
        return [self._parse, self._load]

    def _parse(self, data):
        data["dxr_params"] = DRRParams.from_request(data, self.cfg)  # before reading anything: fail fast
        return data

    def _load(self, data):
        path = image_path(data)
        if input_kind(path) != "ct":
            raise InputError(f"{os.path.basename(path)!r} is a single 2-D image (a radiograph), not a CT; the 'drr' "
                             "task needs a CT (DICOM series, or a 3-D NIfTI/NRRD/MHA); use 'drr_enhance' for radiographs.")
        data["volume"] = self.ct_cache.get(path) if data.get("dxr_from_datastore") else self.ct_cache.read(path)
        return data

    def inverse_transforms(self, data=None):
        return None

    def post_transforms(self, data=None):
        return []

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
