"""Denoising networks for the conditional enhancer (DDPM-HQ) and their presets.

Two families share one call signature ``net(x, t) -> y`` where ``x`` is (B, 2, H, W) = [noisy target, LQ resized to
the target grid] (SR3-style concatenation) and ``t`` is (B,) float timesteps in [0, T):

* :class:`PixelUnshuffleUNet` ("pu-*" presets, the CPU default). The image is folded with ``PixelUnshuffle(f)`` so
  every convolution runs at 1/f of the resolution with f² times the channels, then unfolded at the end with
  ``PixelShuffle``. Measured on this 2-core CPU (torch 2.14, fp32, 2 threads, idle machine, one network
  evaluation at 1024²; ``bench/enhance_speed.py`` prints both in the same run): the paper-like MONAI
  ``DiffusionModelUNet`` (base 16, 8 levels, attention at the deepest, 91.7 M parameters) takes 4.3 s per evaluation
  and 2.3 GB peak RSS; ``pu-fast`` (f=4, widths 32/64/128/128) 0.3 s, so a 20-evaluation 512->1024 enhancement took
  6 s and 1.1 GB. ``pu-small`` (the default: f=2, widths 24/48/96/96, 2.0 M parameters) costs ~2.4x ``pu-fast``
  per evaluation but learned fine detail much faster in our runs (f=4 leaves each 4x4 block to 16 output channels
  of a coarse convolution), so it is the shipped trade-off. Normalisation is a per-pixel LayerNorm over channels
  (no GroupNorm, no attention): every operation is local, so tiled inference reproduces the untiled result up to
  border effects that the blended overlap removes (GroupNorm statistics would differ per tile).
* MONAI ``DiffusionModelUNet`` ("monai-*" presets, including ``paper``: base 16 channels, 8 levels with multipliers
  1,2,4,8,16,32,32,32 and attention at the deepest level) wrapped by :class:`MonaiUNet`, for GPU training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dxr_core.errors import OptionError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) float timesteps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each pixel (local: identical result whatever the tile)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) * torch.rsqrt(var + self.eps)
        return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1 = ChannelLayerNorm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(temb, 2 * cout)
        self.norm2 = ChannelLayerNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class PixelUnshuffleUNet(nn.Module):
    """Small conditional UNet that works at 1/``fold`` resolution through pixel-unshuffle (see module doc)."""

    def __init__(self, in_channels: int = 2, out_channels: int = 1, fold: int = 4,
                 channels: Sequence[int] = (48, 96, 192), num_res_blocks: int = 1, temb_dim: int = 128):
        super().__init__()
        self.fold = fold
        self.channels = tuple(channels)
        self.temb_dim = temb_dim
        self.emb = nn.Sequential(nn.Linear(temb_dim, temb_dim * 2), nn.SiLU(), nn.Linear(temb_dim * 2, temb_dim * 2))
        te = temb_dim * 2
        self.unshuffle = nn.PixelUnshuffle(fold) if fold > 1 else nn.Identity()
        self.shuffle = nn.PixelShuffle(fold) if fold > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(in_channels * fold * fold, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = channels[0]
        for i, ch in enumerate(channels):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c, ch, te))
                c = ch
            self.down.append(blocks)
            skips.append(c)
            self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
        self.mid = nn.ModuleList([ResBlock(c, c, te), ResBlock(c, c, te)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                blocks.append(ResBlock(c + (skips[i] if j == 0 else 0), ch, te))
                c = ch
            self.up.append(blocks)
            self.upsample.append(nn.Conv2d(c, channels[i - 1], 3, padding=1) if i > 0 else nn.Identity())
            if i > 0:
                c = channels[i - 1]
        self.norm_out = ChannelLayerNorm(c)
        self.conv_out = nn.Conv2d(c, out_channels * fold * fold, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def multiple(self) -> int:
        """Input height/width must be a multiple of this."""
        return self.fold * 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.emb(timestep_embedding(t, self.temb_dim))
        h = self.conv_in(self.unshuffle(x))
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for b in blocks:
                h = b(h, emb)
            skips.append(h)
            h = down(h)
        for b in self.mid:
            h = b(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            h = torch.cat([h, skips.pop()], dim=1)
            for b in blocks:
                h = b(h, emb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.shuffle(self.conv_out(F.silu(self.norm_out(h))))


class MonaiUNet(nn.Module):
    """``monai.networks.nets.DiffusionModelUNet`` behind the common ``net(x, t)`` signature."""

    def __init__(self, in_channels: int = 2, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64),
                 attention_levels: Sequence[bool] | None = None, num_res_blocks: int = 1, norm_num_groups: int = 8,
                 num_head_channels: int = 32):
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        channels = tuple(channels)
        if attention_levels is None:
            attention_levels = tuple([False] * (len(channels) - 1) + [True])
        self.channels = channels
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=channels,
            attention_levels=tuple(attention_levels), num_res_blocks=num_res_blocks, norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, timesteps=t)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network; stored inside checkpoints."""

    arch: str = "pu"  # "pu" (PixelUnshuffleUNet) or "monai" (DiffusionModelUNet)
    channels: tuple = (24, 48, 96, 96)
    num_res_blocks: int = 1
    fold: int = 2
    temb_dim: int = 128
    attention_levels: tuple | None = None
    norm_num_groups: int = 8
    num_head_channels: int = 32
    in_channels: int = 2
    out_channels: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if self.attention_levels is not None:
            d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        if d.get("attention_levels") is not None:
            d["attention_levels"] = tuple(d["attention_levels"])
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # tests: a few thousand parameters per level, trains in a minute on a CPU
    "tiny": ModelConfig(arch="pu", channels=(32, 64), num_res_blocks=1, fold=2, temb_dim=64),
    # CPU default (shipped weights): fold 2, 1024² at ~0.5-0.8 s per evaluation on 2 cores
    "pu-small": ModelConfig(arch="pu", channels=(24, 48, 96, 96), num_res_blocks=1, fold=2, temb_dim=128),
    # wider (5.3 M parameters): 2.1x pu-small's training step and inference (596 vs 283 ms per batch of 8 128^2 crops,
    # 2.3 vs 1.1 s per 1024^2 evaluation, 2 threads), for more capacity where the data allow it
    "pu-medium": ModelConfig(arch="pu", channels=(48, 96, 160, 160), num_res_blocks=1, fold=2, temb_dim=128),
    # fastest: fold 4 (~0.3 s per 1024² evaluation) but it learns fine detail more slowly than fold 2
    "pu-fast": ModelConfig(arch="pu", channels=(32, 64, 128, 128), num_res_blocks=1, fold=4, temb_dim=128),
    # larger CPU/GPU variant
    "pu-base": ModelConfig(arch="pu", channels=(64, 128, 256, 256), num_res_blocks=2, fold=4, temb_dim=128),
    # MONAI DiffusionModelUNet, small (tests of the MONAI path)
    "monai-tiny": ModelConfig(arch="monai", channels=(16, 32), num_res_blocks=1, attention_levels=(False, True),
                              norm_num_groups=8, num_head_channels=16),
    # the published configuration: base 16, 8 levels x(1,2,4,8,16,32,32,32), attention at the deepest (GPU)
    "paper": ModelConfig(arch="monai", channels=(16, 32, 64, 128, 256, 512, 512, 512), num_res_blocks=1,
                         attention_levels=(False,) * 7 + (True,), norm_num_groups=16, num_head_channels=64),
}
DEFAULT_PRESET = "pu-small"


def get_config(preset: str | ModelConfig | dict) -> ModelConfig:
    if isinstance(preset, ModelConfig):
        return preset
    if isinstance(preset, dict):
        return ModelConfig.from_dict(preset)
    if preset not in PRESETS:
        raise OptionError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[preset]


def build_model(preset: str | ModelConfig | dict = DEFAULT_PRESET) -> nn.Module:
    """Build the denoiser for a preset name or a :class:`ModelConfig`."""
    cfg = get_config(preset)
    if cfg.arch == "pu":
        return PixelUnshuffleUNet(cfg.in_channels, cfg.out_channels, cfg.fold, cfg.channels, cfg.num_res_blocks,
                                  cfg.temb_dim)
    if cfg.arch == "monai":
        return MonaiUNet(cfg.in_channels, cfg.out_channels, cfg.channels, cfg.attention_levels, cfg.num_res_blocks,
                         cfg.norm_num_groups, cfg.num_head_channels)
    raise OptionError(f"unknown model architecture {cfg.arch!r}; use 'pu' or 'monai'.")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
