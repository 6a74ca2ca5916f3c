"""Conditional diffusion enhancer (DDPM-HQ): LQ radiograph -> enhanced, super-resolved radiograph.

Conditioning is SR3-style: the LQ image, bicubic-resized to the target grid, is concatenated to the noisy image.

Tiling: the noise field, the sampler state and every sampler update live on the *whole* image (one generator, one
global noise field); only the network call inside each step is tiled, through ``monai.inferers.SlidingWindowInferer``
with gaussian blending of overlapping tiles. Independent per-tile sampling would put different noise on each side
of a seam; this way seams only see the (small, down-weighted) border effect of the convolutions. Tile sizes are
balanced (``--tile`` is the maximum) so a 1024² image with ``tile=512`` runs as 3x3 tiles of 384² rather than
3x3 tiles of 512², keeping the overlap overhead near 25 %.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from dxr_core.diffusion.samplers import network_evaluations, sample
from dxr_core.diffusion.schedule import DiffusionConfig, NoiseSchedule
from dxr_core.errors import InputError, ModelError, OptionError
from dxr_core.models import ModelConfig, build_model

CHECKPOINT_FORMAT = "dxr-ddpm-hq/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: the default: fine-tuned on real radiographs (model card ddpm_hq_real_pu_small.md)
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ddpm_hq_real_pu_small.pt"
#: trained on the chest phantom's DRR pairs only (model card ddpm_hq_pu_small.md): the init of the default
PHANTOM_WEIGHTS = WEIGHTS_DIR / "ddpm_hq_pu_small.pt"


def upsample_condition(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """LQ (B,1,h,w) in [-1,1] -> bicubic on the target grid (B,1,H,W), clamped to [-1,1]."""
    if tuple(lq.shape[-2:]) == tuple(size):
        return lq
    return F.interpolate(lq, size=tuple(size), mode="bicubic", align_corners=False).clamp(-1, 1)


def bicubic_upsample(lq: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) image in [0, 1] -> the model's condition as an image: bicubic on the (H, W) grid, float32 in [0, 1]
    (the peer every enhancement is measured against)."""
    x = torch.from_numpy(np.ascontiguousarray(lq, dtype=np.float32))[None, None] * 2 - 1
    return ((upsample_condition(x, tuple(size)) + 1) / 2)[0, 0].numpy()


def sampling_defaults(meta: dict | None) -> tuple[str, int]:
    """(sampler, steps) of a checkpoint's ``meta["sampling"]`` (set when a model is exported, stated in its model
    card), else the package defaults (``ddim``, 10)."""
    s = (meta or {}).get("sampling") or {}
    return str(s.get("sampler", DEFAULT_SAMPLER)), int(s.get("steps", DEFAULT_STEPS))


def _balanced_roi(length: int, tile: int, overlap: int, multiple: int) -> int:
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / max(1, tile - overlap))
    roi = math.ceil((length + (n - 1) * overlap) / n)
    return min(length, int(math.ceil(roi / multiple) * multiple))


@dataclass
class Enhancer:
    """A trained denoiser plus its diffusion set-up. Build with :func:`load_enhancer` or :meth:`from_checkpoint`."""

    model: torch.nn.Module
    model_config: ModelConfig
    diffusion: DiffusionConfig
    meta: dict = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self):
        self.model = self.model.to(self.device).eval()
        self.schedule = NoiseSchedule(self.diffusion)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "model_config": self.model_config.to_dict(),
                "diffusion": self.diffusion.to_dict(), "meta": dict(self.meta),
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def save(self, path: str | os.PathLike, half: bool = False) -> Path:
        from dxr_core.io.atomic import atomic_path

        st = self.state()
        if half:
            st["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in st["state_dict"].items()}
        with atomic_path(path) as tmp:
            torch.save(st, tmp)
        return Path(path)

    @classmethod
    def from_state(cls, st: dict, device: str = "cpu", source: str = "checkpoint") -> "Enhancer":
        if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
            raise ModelError(f"{source} is not a DDPM-HQ enhancer checkpoint (format {CHECKPOINT_FORMAT}); pass a "
                             "file written by `dxr train ddpm-hq` (RUN/model.pt).")
        mcfg = ModelConfig.from_dict(st["model_config"])
        model = build_model(mcfg)
        sd = {k: v.float() if v.is_floating_point() else v for k, v in st["state_dict"].items()}
        try:
            model.load_state_dict(sd)
        except RuntimeError as err:
            raise ModelError(f"{source} does not match its model configuration ({str(err).splitlines()[0]}); "
                             "re-export it with `dxr train ddpm-hq`.") from None
        return cls(model, mcfg, DiffusionConfig.from_dict(st["diffusion"]), dict(st.get("meta", {})), device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu") -> "Enhancer":
        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        if not path.is_file():
            raise ModelError(f"no enhancer checkpoint at {path}; pass --model with a file written by "
                             "`dxr train ddpm-hq` (RUN/model.pt).")
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors + JSON-like data: no code runs
        except Exception as err:  # corrupt / not a torch file
            raise ModelError(f"cannot read enhancer checkpoint {path} ({type(err).__name__}); pass a file written by "
                             "`dxr train ddpm-hq`.") from None
        return cls.from_state(st, device=device, source=str(path))

    # ------------------------------------------------------------------ sampling defaults
    @property
    def default_sampling(self) -> tuple[str, int]:
        """(sampler, steps) this model is meant to run with (:func:`sampling_defaults` of its meta)."""
        return sampling_defaults(self.meta)

    def resolve_sampling(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        """``sampler`` / ``steps`` with None replaced by this model's defaults."""
        d_sampler, d_steps = self.default_sampling
        return (d_sampler if sampler is None else sampler), (d_steps if steps is None else int(steps))

    @property
    def default_temperature(self) -> float:
        """Initial-noise temperature this model is meant to run with (``meta["sampling"]["temperature"]``, else 1)."""
        return float(((self.meta or {}).get("sampling") or {}).get("temperature", 1.0))

    def resolve_temperature(self, temperature: float | None) -> float:
        """``temperature`` (None: the model's default), checked to lie in [0, 1]."""
        tau = self.default_temperature if temperature is None else float(temperature)
        if not 0.0 <= tau <= 1.0:  # also False for NaN
            raise OptionError(f"temperature {temperature} must be between 0 and 1 (1: the trained prior; 0: start "
                              "from the mean, the least added noise).")
        return tau

    # ------------------------------------------------------------------ network
    @property
    def multiple(self) -> int:
        return int(getattr(self.model, "multiple", 1))

    def _net(self, x_t: torch.Tensor, cond: torch.Tensor, t: int) -> torch.Tensor:
        tt = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        return self.model(torch.cat([x_t, cond], dim=1), tt)

    def _model_fn(self, cond: torch.Tensor, tile: int | None, overlap: int, tile_batch: int):
        H, W = cond.shape[-2:]
        if not tile or (H <= tile and W <= tile):
            return lambda x, t: self._net(x, cond, t)
        from monai.inferers import SlidingWindowInferer

        m = self.multiple
        tile = max(m, (int(tile) // m) * m)
        overlap = max(m, int(overlap))
        roi = (_balanced_roi(H, tile, overlap, m), _balanced_roi(W, tile, overlap, m))
        ov = tuple(min(0.75, overlap / r) if r < L else 0.0 for r, L in zip(roi, (H, W)))
        inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=tile_batch, overlap=ov, mode="gaussian",
                                       sigma_scale=0.125, padding_mode="replicate", progress=False)

        def fn(x, t):
            def net(window):
                tt = torch.full((window.shape[0],), float(t), device=window.device)
                return self.model(window, tt)

            return inferer(torch.cat([x, cond], dim=1), net)

        return fn

    # ------------------------------------------------------------------ enhancement
    @torch.inference_mode()
    def enhance_tensor(self, lq: torch.Tensor, scale: float = 2.0, sampler: str | None = None,
                       steps: int | None = None,
                       seed: int | Sequence[int] = 0, tile: int | None = 512, overlap: int = 64, eta: float = 0.0,
                       tile_batch: int = 4, out_size: tuple[int, int] | None = None,
                       progress: bool = False, init: torch.Tensor | None = None,
                       strength: float = 1.0, temperature: float | None = None) -> torch.Tensor:
        """(B,1,h,w) LQ in [0,1] -> (B,1,H,W) enhanced in [0,1], H = round(h*scale) unless ``out_size``.

        ``init`` ((B,1,H,W) in [0,1]) and ``strength`` in (0, 1]: SDEdit (Meng et al., ICLR 2022): the sampler
        starts at timestep ``strength * (T - 1)`` from ``init`` noised to that level instead of from pure noise,
        so the result keeps ``init``'s structure coarser than that noise level (1: ignore ``init``).
        ``temperature`` in [0, 1] scales the initial noise (reduced-temperature sampling, as in Glow, Kingma &
        Dhariwal 2018): at 1 step, 0 gives the network's estimate of the mean HQ image from the LQ alone. None: the
        model's default (:attr:`default_temperature`). On held-out real radiographs a model trained on DDPM-LQ pairs
        added half as much noise in flat regions at 0.25 as at 1, with +1.2 dB PSNR (docs/ddpm_hq.md).
        ``sampler`` / ``steps`` None: the model's defaults (:attr:`default_sampling`)."""
        sampler, steps = self.resolve_sampling(sampler, steps)
        tau = self.resolve_temperature(temperature)
        if sampler not in SAMPLERS:
            raise OptionError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        if int(steps) < 1:
            raise OptionError(f"--steps must be at least 1 (this model's default is {self.default_sampling[1]}).")
        if lq.ndim != 4 or lq.shape[1] != 1:
            raise InputError(f"expected a (B,1,H,W) single-channel batch, got shape {tuple(lq.shape)}; convert the "
                             "radiograph to greyscale first.")
        if out_size is None:
            if not (0.25 <= float(scale) <= 8):
                raise OptionError(f"--scale {scale} is out of range; use a value between 0.25 and 8 (2 = 512->1024).")
            out_size = (max(1, round(lq.shape[-2] * scale)), max(1, round(lq.shape[-1] * scale)))
        H, W = out_size
        lq = lq.to(self.device, torch.float32) * 2 - 1
        cond = upsample_condition(lq, (H, W))
        m = self.multiple
        Hp, Wp = math.ceil(H / m) * m, math.ceil(W / m) * m
        if (Hp, Wp) != (H, W):
            mode = "reflect" if (Hp - H < H and Wp - W < W) else "replicate"
            cond_p = F.pad(cond, (0, Wp - W, 0, Hp - H), mode=mode)
        else:
            cond_p = cond
        B = lq.shape[0]
        seeds = [int(seed) + i for i in range(B)] if not isinstance(seed, (list, tuple)) else [int(s) for s in seed]
        noise = torch.stack([torch.randn((1, Hp, Wp), generator=torch.Generator().manual_seed(s)) for s in seeds])
        noise = noise * tau
        gen = torch.Generator(device=self.device).manual_seed(seeds[0] + 7919)
        clip = self.diffusion.clip_x0
        fn = self._model_fn(cond_p, tile, overlap, tile_batch)
        x_start, start = noise.to(self.device), None
        if not 0.0 < float(strength) <= 1.0:
            raise OptionError(f"strength {strength} must be in (0, 1] (1 = start from pure noise).")
        if init is not None and float(strength) < 1.0:
            x_start, start = self._noised_init(init, cond, strength, x_start, (Hp, Wp))
        x0 = sample(fn, x_start, self.schedule, sampler, steps, gen, eta, clip, progress, start=start)
        x0 = x0[..., :H, :W]
        hq = cond + x0 / self.diffusion.residual_scale if self.diffusion.residual else x0
        return ((hq.clamp(-1, 1) + 1) / 2).float().cpu()

    def _noised_init(self, init: torch.Tensor, cond: torch.Tensor, strength: float, noise: torch.Tensor,
                     padded: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """SDEdit's start: ``init`` as the diffusion target (the image, or its residual over the condition),
        noised to timestep ``strength * (T - 1)``."""
        H, W = cond.shape[-2:]
        if tuple(init.shape[-2:]) != (H, W) or init.shape[0] != cond.shape[0]:
            raise InputError(f"init must be {(cond.shape[0], 1, H, W)} (the output grid), got {tuple(init.shape)}.")
        x = init.to(self.device, torch.float32) * 2 - 1
        if self.diffusion.residual:
            x = (x - cond) * self.diffusion.residual_scale
        x = F.pad(x, (0, padded[1] - W, 0, padded[0] - H), mode="replicate")
        start = int(round(float(strength) * (self.schedule.T - 1)))
        a, s = float(self.schedule.alpha[start]), float(self.schedule.sigma[start])
        return a * x + s * noise, start

    def enhance(self, image: np.ndarray, scale: float = 2.0, sampler: str | None = None,
                steps: int | None = None, seed: int = 0,
                tile: int | None = 512, **kw) -> np.ndarray:
        """(h, w) float image in [0, 1] -> (round(h*scale), round(w*scale)) float32 in [0, 1]."""
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 2:
            raise InputError(f"expected a 2-D greyscale radiograph, got shape {arr.shape}.")
        out = self.enhance_tensor(torch.from_numpy(arr)[None, None], scale, sampler, steps, seed, tile, **kw)
        return out[0, 0].numpy()

    def evaluations(self, sampler: str | None = None, steps: int | None = None) -> int:
        return network_evaluations(*self.resolve_sampling(sampler, steps), self.schedule.T)


def load_enhancer(path: str | os.PathLike | None = None, device: str = "cpu") -> Enhancer:
    """Load an enhancer; ``path=None`` loads the shipped weights in ``dxr_core/weights``."""
    if path is None:
        if not DEFAULT_WEIGHTS.is_file():
            raise ModelError(f"no DDPM-HQ weights are installed ({DEFAULT_WEIGHTS} is missing); train a model with "
                             "`dxr train ddpm-hq --pairs DIR --out RUN` and pass --model RUN/model.pt.")
        path = DEFAULT_WEIGHTS
    return Enhancer.from_checkpoint(path, device=device)


def enhance(image: np.ndarray, scale: float = 2.0, sampler: str | None = None, steps: int | None = None,
            seed: int = 0,
            tile: int | None = 512, model: str | os.PathLike | Enhancer | None = None, **kw) -> np.ndarray:
    """One-call enhancement of a (h, w) image in [0, 1] with the shipped (or given) model."""
    enh = model if isinstance(model, Enhancer) else load_enhancer(model)
    return enh.enhance(image, scale=scale, sampler=sampler, steps=steps, seed=seed, tile=tile, **kw)
