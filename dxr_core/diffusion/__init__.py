"""dxr_core.diffusion: noise schedules, samplers (DDPM ancestral, DDIM, DPM-Solver++ 2M), the tiled conditional
enhancer (DDPM-HQ) and its `dxr enhance` / `dxr train ddpm-hq` / `dxr evaluate` commands."""
# Lazy exports (scientific-python"s lazy_loader, as scikit-image does): `dxr --help` and the drivers"
# discovery import this package without paying for torch until a name is used.
import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "enhancer": ["DEFAULT_WEIGHTS", "PHANTOM_WEIGHTS", "Enhancer", "enhance", "load_enhancer",
                     "upsample_condition"],
        "samplers": ["SAMPLERS", "network_evaluations", "sample"],
        "schedule": ["DiffusionConfig", "NoiseSchedule"],
    },
)
