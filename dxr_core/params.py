"""One parameter schema for every driver: names, types, ranges and defaults of a DRR / enhancement request.

The MONAI Label tasks, ``dxr dataset`` and the pipeline read requests through these functions, so the same
request means the same thing everywhere (``dxr drr``'s flags use the same names with dashes and the same ranges).
Every check raises :class:`dxr_core.errors.OptionError` with a sentence naming the parameter and the fix (the
server answers it with 422). Values may arrive as JSON numbers, strings or lists.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from dxr_core.errors import OptionError


def param(req: Mapping[str, Any], key: str, default: Any = None, aliases: Sequence[str] = ()) -> Any:
    for k in (key, *aliases):
        if k in req and req[k] is not None and req[k] != "":
            return req[k]
    return default


def as_float(value: Any, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"Parameter {key!r} must be a number between {lo:g} and {hi:g}; got {value!r}.") from None
    if not math.isfinite(x) or x > hi or x < lo or (lo_open and x == lo):
        rng = f"above {lo:g} and at most {hi:g}" if lo_open else f"between {lo:g} and {hi:g}"
        raise OptionError(f"Parameter {key!r} must be {rng}; got {value!r}.")
    return x


def as_int(value: Any, key: str, lo: int, hi: int) -> int:
    try:
        f = float(value)
        ok = math.isfinite(f) and f.is_integer()
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise OptionError(f"Parameter {key!r} must be a whole number between {lo} and {hi}; got {value!r}.")
    x = int(f)
    if not lo <= x <= hi:
        raise OptionError(f"Parameter {key!r} must be between {lo} and {hi}; got {x}.")
    return x


def as_choice(value: Any, key: str, choices: Sequence[str]) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise OptionError(f"Parameter {key!r} must be one of {', '.join(choices)}; got {value!r}.")
    return v


def as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"Parameter {key!r} must be true or false; got {value!r}.")


def as_size(value: Any, key: str, lo: int, hi: int) -> tuple[int, int]:
    """An int (square) or [rows, cols] (also "rows,cols" / "rowsxcols")."""
    if isinstance(value, str) and any(s in value for s in ",x"):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise OptionError(f"Parameter {key!r} must be one number or [rows, cols]; got {value!r}.")
        return as_int(value[0], f"{key}[0] (rows)", lo, hi), as_int(value[1], f"{key}[1] (cols)", lo, hi)
    n = as_int(value, key, lo, hi)
    return n, n


def as_points(value: Any, key: str) -> np.ndarray:
    """[[x, y, z], ...] LPS mm (one point may be given as [x, y, z])."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.size == 3:
        arr = arr[None, :]
    if arr is None or arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
        raise OptionError(f"Parameter {key!r} must be a list of LPS points in mm, [[x, y, z], ...]; got {value!r}.")
    return arr


#: every request key the ``drr`` task reads (aliases included); anything else is refused with 422
DRR_KEYS = ("preset", "scatter", "grid_ratio", "detector", "processing", "cleanup", "view", "size", "pixel_spacing",
            "sid", "sad", "rotation", "mode", "kvp", "energy_kev", "dose",
            "seed", "output_dtype", "nodules", "nodule_count", "nodule_points", "nodule_at", "nodule_type",
            "nodule_types", "nodule_kind", "nodule_kinds", "nodule_shape", "nodule_shapes", "nodule_size",
            "nodule_diameter", "nodule_seed", "nodule_location", "nodule_overlap")
NODULE_TYPES = ("solid", "part_solid", "ggo", "calcified")  # = dxr_core.nodules.models.KINDS (tested)
NODULE_SHAPES = ("sphere", "ellipsoid", "lobulated", "spiculated")  # = dxr_core.nodules.models.SHAPES (tested)
NODULE_LOCATIONS = ("random", "intraparenchymal", "juxtapleural", "perifissural")
OUTPUT_DTYPES = ("float32", "uint16")  # float32 keeps [0, 1]; uint16 stores round(value * 65535)
KVP_RANGE = (20.0, 150.0)  # tube voltages the spectrum model covers (spekpy), as `dxr drr --kvp`
ENERGY_RANGE = (1.0, 500.0)  # mono energies the attenuation tables cover (xraydb), as `dxr drr --energy-kev`
MAX_NODULES = 20


@dataclass
class DRRParams:
    """A validated DRR request (everything ``dxr_core`` needs, in its own units)."""

    preset: str | None = "pa-chest"  # pa-chest / ap-portable / lateral: clinical acquisition + CT clean-up; None: raw
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
    nodule_location: str = "random"  # random (literature mix), intraparenchymal, juxtapleural, perifissural
    nodule_overlap: bool = False  # allow projected boxes to overlap (default: random nodules keep them apart)
    # acquisition switches (None: the preset's, i.e. on with a preset and off without; see docs/drr_physics.md)
    scatter: bool | None = None
    grid_ratio: float | None = None  # 0 = no grid
    detector: bool | None = None
    processing: str | None = None  # raw | default
    cleanup: str | None = None  # table,fov,taper,contrast | all | none (None: all with a preset, none without)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_request(cls, req: Mapping[str, Any], max_size: int = 2048) -> "DRRParams":
        """Check a request (CLI options, server params) and return it in ``dxr_core``'s units; OptionError -> 422."""
        from dxr_core.drr.geometry import VIEWS

        from dxr_core.drr.presets import DEFAULT_PRESET, PRESET_NAMES, get_preset

        p = cls()
        preset = param(req, "preset", DEFAULT_PRESET)
        p.preset = None if preset in (None, "none") else as_choice(preset, "preset", PRESET_NAMES)
        pr = get_preset(p.preset) if p.preset else None
        p.view = as_choice(param(req, "view", pr.view if pr else "pa"), "view", VIEWS)
        p.size = as_size(param(req, "size", 512), "size", 16, max_size)
        if param(req, "pixel_spacing") is not None:
            p.pixel_spacing = as_float(param(req, "pixel_spacing"), "pixel_spacing", 0.0, 20.0, lo_open=True)
        p.sid = as_float(param(req, "sid", pr.sid_mm if pr else 1500.0), "sid", 100.0, 10000.0)
        p.sad = as_float(param(req, "sad", pr.sad_mm if pr else 1000.0), "sad", 50.0, 10000.0)
        if p.sad >= p.sid:
            raise OptionError(f"Parameter 'sad' ({p.sad:g} mm) must be smaller than 'sid' ({p.sid:g} mm): the "
                              "patient sits between the source and the detector.")
        p.rotation = as_float(param(req, "rotation", 0.0), "rotation", -360.0, 360.0)
        p.mode = as_choice(param(req, "mode", "poly"), "mode", ("mono", "poly"))
        p.kvp = as_float(param(req, "kvp", pr.kvp if pr else 120.0), "kvp", KVP_RANGE[0], KVP_RANGE[1])
        if param(req, "energy_kev") is not None:
            if p.mode != "mono":
                raise OptionError("Parameter 'energy_kev' applies to mode 'mono' only; "
                                  "drop it or add \"mode\": \"mono\".")
            p.energy_kev = as_float(param(req, "energy_kev"), "energy_kev", ENERGY_RANGE[0], ENERGY_RANGE[1])
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
        p.nodule_location = as_choice(param(req, "nodule_location", "random"), "nodule_location", NODULE_LOCATIONS)
        p.nodule_overlap = as_bool(param(req, "nodule_overlap", False), "nodule_overlap")
        for key in ("scatter", "detector"):
            if param(req, key) is not None:
                setattr(p, key, as_bool(param(req, key), key))
        if param(req, "grid_ratio") is not None:
            p.grid_ratio = as_float(param(req, "grid_ratio"), "grid_ratio", 0.0, 16.0)
        if param(req, "processing") is not None:
            p.processing = as_choice(param(req, "processing"), "processing", ("raw", "default"))
        if param(req, "cleanup") is not None:
            from dxr_core.drr.cleanup import parse_steps

            text = param(req, "cleanup")
            text = ",".join(map(str, text)) if isinstance(text, (list, tuple)) else str(text)
            try:
                parse_steps(text)
            except OptionError as err:
                raise OptionError(str(err).replace("--cleanup", "Parameter 'cleanup'")) from None
            p.cleanup = text
        return p

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        from dxr_core.io.radiograph import jsonable

        return jsonable(d)


def _names(value: Any, key: str, allowed: Sequence[str]) -> list | None:
    """One name, a comma list or a JSON list -> validated list (None: all allowed, the default)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [str(v).strip().lower() for v in items if str(v).strip()]
    if not items or items == ["random"]:
        return None
    return [as_choice(v, key, allowed) for v in items]


#: request keys of this task besides the ``drr`` ones
ENHANCE_KEYS = ("sampler", "steps", "scale", "seed", "tile", "temperature")


def parse_enhance(req: Mapping[str, Any], sampler: str | None = None, steps: int | None = None,
                  max_steps: int = 1000) -> Dict[str, Any]:
    """The enhancement parameters of a request (defaults ``sampler``/``steps``, at most ``max_steps``). A sampler or
    step count that neither the request nor the server sets stays None: the model's own default
    (``Enhancer.resolve_sampling``)."""
    from dxr_core.diffusion.defaults import SAMPLERS

    sampler = param(req, "sampler", sampler)
    sampler = None if sampler is None else as_choice(sampler, "sampler", SAMPLERS)
    steps = param(req, "steps", steps)
    steps = None if steps is None else as_int(steps, "steps", 1, max_steps)
    scale = as_float(param(req, "scale", 2), "scale", 1.0, 4.0)
    seed = as_int(param(req, "seed", 0), "seed", 0, 2**31 - 1)
    tile = as_int(param(req, "tile", 512), "tile", 32, 4096)
    temperature = param(req, "temperature", None)  # None: the model's own (Enhancer.default_temperature)
    temperature = None if temperature is None else as_float(temperature, "temperature", 0.0, 1.0)
    return {"sampler": sampler, "steps": steps, "scale": scale, "seed": seed, "tile": tile, "temperature": temperature}
