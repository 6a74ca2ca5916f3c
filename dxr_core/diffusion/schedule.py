"""Noise schedules (cosine / linear, any T) and the eps- / v-prediction parameterisations.

The betas and cumulative alphas come from MONAI's scheduler component store
(``monai.networks.schedulers.DDPMScheduler``, schedules ``"cosine"`` and ``"linear_beta"``), so our training noise and
MONAI's ancestral sampler agree exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from dxr_core.errors import OptionError

SCHEDULES = {"cosine": "cosine", "linear": "linear_beta"}
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction"}


@dataclass
class DiffusionConfig:
    """How the diffusion process is set up; stored inside checkpoints.

    residual: the diffused signal is ``x0 = (HQ - up(LQ)) * residual_scale`` (both in [-1, 1]) instead of the HQ image
    itself; the network still sees ``up(LQ)`` concatenated to the noisy input (SR3 conditioning). Diffusing the
    residual (as SRDiff/ResShift do) makes the model spend its capacity on the missing detail only; with
    ``residual_scale`` chosen so x0 has unit-ish spread, the usual schedules keep their meaning.
    clip_x0: predicted x0 is clamped to +-clip_x0 during sampling (the valid range of x0, 2*residual_scale).
    """

    schedule: str = "cosine"
    num_train_timesteps: int = 1000
    prediction: str = "v"
    residual: bool = True
    residual_scale: float = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise OptionError(f"unknown noise schedule {self.schedule!r}; use 'cosine' or 'linear'.")
        if self.prediction not in PREDICTIONS:
            raise OptionError(f"unknown prediction type {self.prediction!r}; use 'eps' or 'v'.")
        if int(self.num_train_timesteps) < 2:
            raise OptionError("num_train_timesteps must be at least 2 (the paper uses 2000, we default to 1000).")

    @property
    def clip_x0(self) -> float:
        return 2.0 * self.residual_scale if self.residual else 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        return cls(**d)


class NoiseSchedule:
    """Discrete VP schedule: x_t = alpha_t x0 + sigma_t eps, alpha_t² = alphas_cumprod[t]."""

    def __init__(self, cfg: DiffusionConfig):
        from monai.networks.schedulers import DDPMScheduler

        self.cfg = cfg
        self.T = int(cfg.num_train_timesteps)
        sched = DDPMScheduler(num_train_timesteps=self.T, schedule=SCHEDULES[cfg.schedule])
        self.alphas_cumprod = sched.alphas_cumprod.double().clamp(1e-12, 1.0)
        self.alpha = self.alphas_cumprod.sqrt()
        self.sigma = (1 - self.alphas_cumprod).sqrt()

    def monai_scheduler(self):
        """MONAI's DDPM ancestral scheduler configured like this schedule (used for the full chain)."""
        from monai.networks.schedulers import DDPMScheduler

        c = self.cfg.clip_x0
        return DDPMScheduler(num_train_timesteps=self.T, schedule=SCHEDULES[self.cfg.schedule],
                             prediction_type=PREDICTIONS[self.cfg.prediction], clip_sample=True,
                             clip_sample_min=-c, clip_sample_max=c)

    def _ab(self, t: torch.Tensor, like: torch.Tensor):
        a = self.alpha.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
        s = self.sigma.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
        return a, s

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._ab(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output."""
        if self.cfg.prediction == "eps":
            return noise
        a, s = self._ab(t, x0)
        return a * noise - s * x0

    def split(self, out: torch.Tensor, x_t: torch.Tensor, alpha: float, sigma: float, clip: float | None = None):
        """Network output at (alpha, sigma) -> (x0, eps); x0 optionally clamped (eps then made consistent)."""
        if self.cfg.prediction == "eps":
            x0 = (x_t - sigma * out) / alpha
            eps = out
        else:
            x0 = alpha * x_t - sigma * out
            eps = sigma * x_t + alpha * out
        if clip is not None:
            x0c = x0.clamp(-clip, clip)
            if sigma > 0:
                eps = (x_t - alpha * x0c) / sigma
            x0 = x0c
        return x0, eps
