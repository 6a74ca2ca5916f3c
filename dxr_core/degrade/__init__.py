"""dxr_core.degrade: low-quality (LQ) synthesis from a high-quality radiograph, one interface for every method.

    >>> from dxr_core.degrade import degrade, METHODS
    >>> lq = degrade(hq, "high_order", seed=3)            # float32 (H/2, W/2) in [0, 1]
    >>> lq, params = degrade(hq, "high_order", seed=3, return_params=True)

Methods (one module each): ``bicubic`` and ``area`` (plain downsampling), ``high_order`` (random Real-ESRGAN-style
chain: blur, resize, noise, JPEG), ``acquisition`` (2-D approximation of the look of a DRR rendered from a clinical
thick-slice CT), ``munit`` and ``ddpm`` (learned from unpaired radiographs and DRRs: MUNIT-LQ with a given
model, DDPM-LQ with the shipped one by default). See ``docs/degrade.md``.
"""
from dxr_core.degrade.api import METHODS, degrade, method_options, output_shape

__all__ = ["degrade", "METHODS", "method_options", "output_shape"]
