from .ddpm_hq import DDPMHQFineTune

__all__ = ["DDPMHQFineTune"]
