"""The one entry point :func:`degrade` and the method registry."""
from __future__ import annotations

import importlib
import inspect
import zlib
from typing import Any, Callable

import numpy as np

from dxr_core.errors import InputError, OptionError

# method name -> "module:function"; each function is f(image, out_shape, rng, **options) -> image (or (image, params))
METHODS: dict[str, str] = {
    "bicubic": "dxr_core.degrade.resize:bicubic",
    "area": "dxr_core.degrade.resize:area",
    "high_order": "dxr_core.degrade.high_order:high_order",
    "acquisition": "dxr_core.degrade.acquisition:acquisition_2d",  # 2-D approximation (no CT needed)
    "munit": "dxr_core.degrade.learned:munit",
    "ddpm": "dxr_core.degrade.learned:ddpm",
}


def image_seed(seed: int, name: str) -> int:
    """Per-image seed from the run seed and the file name (stable when files are added or removed)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])
               .generate_state(1)[0])


def _function(method: str) -> Callable[..., Any]:
    if not isinstance(method, str) or method not in METHODS:
        raise OptionError(f"Unknown degradation method {method!r}; choose one of {', '.join(METHODS)}.")
    mod, fn = METHODS[method].split(":")
    return getattr(importlib.import_module(mod), fn)


def method_options(method: str) -> dict[str, Any]:
    """The options a method accepts, with their defaults."""
    sig = inspect.signature(_function(method))
    return {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}


def output_shape(shape: tuple[int, int], scale: float = 2.0) -> tuple[int, int]:
    """LQ shape for an HQ ``shape`` and ``scale`` (>= 1): ``round(H / scale), round(W / scale)``, at least 1."""
    s = float(scale)
    if not np.isfinite(s) or s < 1.0:
        raise OptionError(f"Scale {scale!r} must be a number >= 1 (HQ size / LQ size), e.g. 2.")
    return max(1, int(round(shape[0] / s))), max(1, int(round(shape[1] / s)))


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2 or min(img.shape) < 2:
        raise InputError(f"degrade needs one 2-D radiograph (H, W), got shape {img.shape}.")
    if np.issubdtype(img.dtype, np.integer):
        raise InputError(f"degrade needs a float image in [0, 1], got {img.dtype}; read it with "
                         "dxr_core.io.read_radiograph (which scales integers to [0, 1]).")
    img = img.astype(np.float32)
    if not np.all(np.isfinite(img)):
        raise InputError("The image holds NaN/infinite values; give a finite radiograph in [0, 1].")
    return np.clip(img, 0.0, 1.0)


def degrade(image, method: str, seed: int = 0, scale: float = 2.0, return_params: bool = False, **options):
    """Degrade a float32 (H, W) radiograph in [0, 1] (bone bright) to its LQ version, by default at half size.

    ``method``: one of :data:`METHODS`. ``seed`` drives every random choice (same seed, same output).
    ``scale``: HQ/LQ size ratio (>= 1; the LQ is ``round(H / scale) x round(W / scale)``). ``options`` are the
    method's own keyword options (see :func:`method_options`); an unknown one is an :class:`OptionError`.
    Returns the LQ float32 image in [0, 1], or ``(image, params)`` with ``return_params=True`` (the method's
    settings and, for ``high_order``, the sampled degradation chain: enough to reproduce or describe it).
    """
    fn = _function(method)
    allowed = method_options(method)
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise OptionError(f"Method {method!r} has no option(s) {', '.join(bad)}; its options are: "
                          f"{', '.join(allowed) or 'none'}.")
    img = _as_image(image)
    shape = output_shape(img.shape, scale)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5EED]))
    res = fn(img, shape, rng, **options)
    out, params = res if isinstance(res, tuple) else (res, {})
    out = np.clip(np.asarray(out, np.float32), 0.0, 1.0)
    if out.shape != shape:  # every method ends on the target grid; this guards the contract
        raise RuntimeError(f"degrade method {method!r} returned {out.shape}, expected {shape}")
    if return_params:
        return out, {"method": method, "seed": int(seed), "scale": float(scale),
                     "options": {**allowed, **options}, **params}
    return out
