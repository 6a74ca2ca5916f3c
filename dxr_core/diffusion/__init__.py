"""dxr_core.diffusion: noise schedules, samplers (DDPM ancestral, DDIM, DPM-Solver++ 2M), the tiled conditional
enhancer (DDPM-HQ) and its `dxr enhance` / `dxr train ddpm-hq` / `dxr evaluate` commands."""
from dxr_core.diffusion.enhancer import (DEFAULT_WEIGHTS, Enhancer, enhance, load_enhancer, upsample_condition)
from dxr_core.diffusion.samplers import SAMPLERS, network_evaluations, sample
from dxr_core.diffusion.schedule import DiffusionConfig, NoiseSchedule

__all__ = ["DEFAULT_WEIGHTS", "Enhancer", "enhance", "load_enhancer", "upsample_condition", "SAMPLERS",
           "network_evaluations", "sample", "DiffusionConfig", "NoiseSchedule"]
