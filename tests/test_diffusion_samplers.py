"""Schedules and samplers, checked against an exact (analytic) denoiser for Gaussian data."""
from __future__ import annotations

import math

import pytest
import torch

from dxr_core.diffusion import DiffusionConfig, NoiseSchedule, network_evaluations, sample
from dxr_core.errors import OptionError


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("T", [1000, 2000])
def test_schedule_monotone(schedule, T):
    s = NoiseSchedule(DiffusionConfig(schedule=schedule, num_train_timesteps=T))
    ac = s.alphas_cumprod
    assert ac.shape == (T,) and float(ac[0]) > 0.99 and float(ac[-1]) < 0.01
    assert bool((ac[1:] <= ac[:-1]).all())
    assert torch.allclose(s.alpha ** 2 + s.sigma ** 2, torch.ones(T, dtype=s.alpha.dtype))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_prediction_roundtrip(prediction):
    s = NoiseSchedule(DiffusionConfig(prediction=prediction))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    for t in (0, 10, 500, 999):
        tt = torch.full((3,), t)
        xt = s.add_noise(x0, eps, tt)
        a, sg = float(s.alpha[t]), float(s.sigma[t])
        x0r, epsr = s.split(s.target(x0, eps, tt), xt, a, sg)
        tol = 1e-3 if prediction == "v" or t < 999 else 1e-1  # eps-pred x0 is ill-conditioned at the last step
        assert torch.allclose(x0r, x0, atol=tol) and torch.allclose(epsr, eps, atol=1e-3)


def test_bad_options():
    with pytest.raises(OptionError):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(OptionError):
        DiffusionConfig(prediction="x")
    s = NoiseSchedule(DiffusionConfig())
    with pytest.raises(OptionError):
        sample(lambda x, t: x, torch.zeros(1, 1, 2, 2), s, "euler")


def _gaussian_model(s: NoiseSchedule, mu: float, std: float):
    """Exact network output for data x0 ~ N(mu, std^2) (independent pixels)."""

    def fn(x, t):
        a, sg = float(s.alpha[t]), float(s.sigma[t])
        var = a * a * std * std + sg * sg
        x0 = mu + a * std * std / var * (x - a * mu)
        eps = (x - a * x0) / sg
        if s.cfg.prediction == "eps":
            return eps
        return a * eps - sg * x0

    return fn


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("sampler,steps,tol", [("ddpm", 1000, 0.05), ("ddim", 20, 0.1), ("dpmpp", 10, 0.1),
                                               ("dpmpp", 20, 0.03)])
def test_samplers_reproduce_gaussian(prediction, sampler, steps, tol):
    cfg = DiffusionConfig(schedule="cosine", num_train_timesteps=1000, prediction=prediction, residual=False)
    s = NoiseSchedule(cfg)
    mu, std = 0.1, 0.3  # inside the clip range [-1, 1] of MONAI's ancestral step
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 96, 96, generator=g, dtype=torch.float64)
    out = sample(_gaussian_model(s, mu, std), x, s, sampler, steps, generator=g)
    assert abs(float(out.mean()) - mu) < 0.03
    assert abs(float(out.std()) - std) / std < tol, float(out.std())
    assert network_evaluations(sampler, steps, 1000) == (1000 if sampler == "ddpm" else steps)


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 20, 50, 999, 1000])
def test_times_strictly_decreasing(steps):
    from dxr_core.diffusion.samplers import _times

    t = _times(1000, steps)
    assert len(t) == steps and t[0] == 999 and t[-1] == (0 if steps > 1 else 999)
    assert all(a > b for a, b in zip(t, t[1:]))


@pytest.mark.parametrize("start,steps", [(499, 10), (299, 10), (5, 10), (0, 3)])
def test_times_from_a_start(start, steps):
    """SDEdit starts part-way: the steps begin at `start`, end at 0 and never exceed start + 1 evaluations."""
    from dxr_core.diffusion.samplers import _times

    t = _times(1000, steps, start)
    assert t[0] == start and t[-1] == 0 and len(t) == min(steps, start + 1)
    assert all(a > b for a, b in zip(t, t[1:]))


def test_ddim_eta_and_determinism():
    s = NoiseSchedule(DiffusionConfig(residual=False))
    fn = _gaussian_model(s, 0.0, 0.5)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    a = sample(fn, x, s, "ddim", 10, torch.Generator().manual_seed(5), eta=1.0)
    b = sample(fn, x, s, "ddim", 10, torch.Generator().manual_seed(5), eta=1.0)
    c = sample(fn, x, s, "ddim", 10, torch.Generator().manual_seed(6), eta=1.0)
    d = sample(fn, x, s, "ddim", 10, torch.Generator().manual_seed(6), eta=0.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert math.isfinite(float(d.std()))
