"""Learned degradations (MUNIT-LQ, DDPM-LQ): the interface exists; the trained models are not shipped yet."""
from __future__ import annotations

from dxr_core.errors import ModelError


def munit(image, out_shape, rng, *, model: str | None = None):
    """MUNIT-LQ (unpaired image-to-image translation HQ -> DRR-like LQ; Huang et al., ECCV 2018)."""
    raise ModelError("The MUNIT-LQ degradation model is not shipped yet (its training is still to come); use "
                     "--method high_order or --method acquisition for now.")


def ddpm(image, out_shape, rng, *, model: str | None = None):
    """DDPM-LQ (a diffusion model that learns the LQ appearance)."""
    raise ModelError("The DDPM-LQ degradation model is not shipped yet (its training is still to come); use "
                     "--method high_order or --method acquisition for now.")
