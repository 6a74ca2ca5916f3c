"""Samplers: full ancestral DDPM (the paper's), DDIM (eta) and DPM-Solver++ 2M.

* ``ddpm`` runs ``monai.networks.schedulers.DDPMScheduler`` over all T steps (number of network evaluations = T).
* ``ddim`` and ``dpmpp`` are written here, compactly in the k-diffusion style (Karras et al. 2022; Lu et al. 2022,
  "DPM-Solver++", multistep 2M), in the VP parameterisation. MONAI 1.6's ``DDIMScheduler`` is not used for DDIM
  because its ``set_timesteps`` spaces steps with ``linspace`` while ``step`` assumes ``t - T // n`` as the previous
  step, so for most step counts it jumps to a different noise level than the one it then evaluates at.

All samplers take ``model_fn(x_t, t) -> raw network output`` (eps or v, per the schedule), evaluate at
time-quadratic steps from T-1 to 0 (see :func:`_times`) and finish at the clean signal (alpha = 1, sigma = 0).
Randomness only from ``generator``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from dxr_core.diffusion.schedule import NoiseSchedule
from dxr_core.errors import OptionError

ModelFn = Callable[[torch.Tensor, int], torch.Tensor]


def _times(T: int, steps: int, start: int | None = None) -> list[int]:
    """Evaluation timesteps, time-quadratic (dense near t=0), as DPM-Solver recommends for discrete-time pixel models.
    ``start``: the first timestep (default ``T - 1``; lower for a sampler started from a noised image, SDEdit).

    Checked with the exact denoiser of Gaussian data (tests/test_diffusion_samplers.py): with time-uniform steps
    DPM-Solver++ 2M at 10 evaluations inflates the sample spread by ~35 % (the last, huge log-SNR step makes the
    multistep extrapolation overshoot); time-quadratic brings it to ~8 % at 10 and ~1 % at 20 evaluations.
    """
    top = T - 1 if start is None else max(0, min(int(start), T - 1))
    steps = max(1, min(int(steps), top + 1))
    if steps == 1:
        return [top]
    out: list[int] = []
    for i in range(steps):
        v = int(round(top * (1 - i / (steps - 1)) ** 2))
        if out and v >= out[-1]:
            v = out[-1] - 1
        out.append(max(v, 0))
    # make strictly decreasing and ending at 0 while keeping the count
    for i in range(len(out) - 1, 0, -1):
        if out[i - 1] <= out[i]:
            out[i - 1] = out[i] + 1
    return out


def _progress(it, progress: bool, total: int, desc: str):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


def network_evaluations(sampler: str, steps: int, T: int) -> int:
    return T if sampler == "ddpm" else max(1, min(int(steps), T))


@torch.no_grad()
def sample(model_fn: ModelFn, x_T: torch.Tensor, schedule: NoiseSchedule, sampler: str = DEFAULT_SAMPLER,
           steps: int = DEFAULT_STEPS,
           generator: torch.Generator | None = None, eta: float = 0.0, clip: float | None = None,
           progress: bool = False, start: int | None = None) -> torch.Tensor:
    """Run ``sampler`` from pure noise ``x_T`` and return the clean x0 estimate. ``start``: begin at this
    timestep instead of ``T - 1``; ``x_T`` must then be the sample at that time (an image noised to it: SDEdit,
    Meng et al., ICLR 2022). DDIM and DPM-Solver++ only."""
    if start is not None and sampler == "ddpm":
        raise OptionError("starting from a noised image (strength < 1) needs --sampler ddim or dpmpp.")
    if sampler == "ddpm":
        return _ddpm(model_fn, x_T, schedule, generator, progress)
    if sampler == "ddim":
        return _ddim(model_fn, x_T, schedule, steps, generator, eta, clip, progress, start)
    if sampler == "dpmpp":
        return _dpmpp_2m(model_fn, x_T, schedule, steps, clip, progress, start)
    raise OptionError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")


def _ddpm(model_fn, x, schedule, generator, progress):
    sched = schedule.monai_scheduler()
    sched.set_timesteps(schedule.T, device=x.device)
    for t in _progress(sched.timesteps.tolist(), progress, schedule.T, "ddpm"):
        out = model_fn(x, int(t))
        x, _ = sched.step(out, int(t), x, generator=generator)
    return x


def _ab(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    if t < 0:
        return 1.0, 0.0
    return float(schedule.alpha[t]), float(schedule.sigma[t])


def _step_pairs(schedule: NoiseSchedule, steps: int, progress: bool, name: str, start: int | None = None):
    """(t, alpha_t, sigma_t, alpha_next, sigma_next) for each evaluation of the few-step samplers; the step after
    the last evaluation time is the clean signal (t = -1: alpha 1, sigma 0)."""
    times = _times(schedule.T, steps, start)
    for i in _progress(range(len(times)), progress, len(times), name):
        t = times[i]
        yield (t, *_ab(schedule, t), *_ab(schedule, times[i + 1] if i + 1 < len(times) else -1))


def _ddim(model_fn, x, schedule, steps, generator, eta, clip, progress, start=None):
    for t, a, s, a_n, s_n in _step_pairs(schedule, steps, progress, "ddim", start):
        x0, eps = schedule.split(model_fn(x, t), x, a, s, clip)
        if s_n == 0.0:  # last step: the clean signal
            x = x0
            break
        # sigma_eta of Song et al. (eq. 16): eta=0 deterministic, eta=1 ancestral-like
        std = eta * (s_n / s) * math.sqrt(max(0.0, 1 - (a / a_n) ** 2)) if eta > 0 else 0.0
        x = a_n * x0 + math.sqrt(max(0.0, s_n ** 2 - std ** 2)) * eps
        if std > 0:
            x = x + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x


def _dpmpp_2m(model_fn, x, schedule, steps, clip, progress, start=None):
    old_x0 = None
    h_last = None
    for t, a, s, a_n, s_n in _step_pairs(schedule, steps, progress, "dpm-solver++", start):
        x0, _ = schedule.split(model_fn(x, t), x, a, s, clip)
        if s_n == 0.0:  # last step: jump to the clean signal (first order, as k-diffusion does)
            x = x0
            break
        lam, lam_n = math.log(a / s), math.log(a_n / s_n)
        h = lam_n - lam
        d = x0
        if old_x0 is not None and h_last is not None:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
        x = (s_n / s) * x - a_n * math.expm1(-h) * d
        old_x0, h_last = x0, h
    return x
