"""MUNIT (Huang, Liu, Belongie, Kautz, "Multimodal Unsupervised Image-to-Image Translation", ECCV 2018), written
from the paper for two radiograph domains: ``a`` = HQ (real radiographs), ``b`` = LQ (DRRs).

Each domain has an auto-encoder:

* content encoder: 7x7 conv, ``n_down`` 4x4 stride-2 convs (width doubling), ``n_res`` residual blocks; instance
  norm + ReLU throughout, reflect padding. Content code: ``width * 2**n_down`` channels at 1/2**n_down size.
* style encoder: 7x7 conv, ``n_down`` 4x4 stride-2 convs (width doubling), two more stride-2 convs at constant
  width, global average pooling, 1x1 conv to the ``style_dim``-D style code (no normalisation: the style is in the
  statistics that instance norm would remove). The style prior is N(0, I).
* decoder: ``n_res`` residual blocks with adaptive instance normalisation (AdaIN: per-channel scale and shift
  predicted by an MLP from the style code), ``n_down`` upsamplings (nearest x2, 5x5 conv, layer norm, ReLU),
  7x7 conv and tanh (images in [-1, 1]).

Discriminators: ``n_scales`` MONAI :class:`monai.networks.nets.PatchDiscriminator` (LeakyReLU 0.2, no
normalisation, as in MUNIT) applied to the image and to 2x, 4x average-pooled copies; trained with the least-squares
GAN loss (:class:`monai.losses.PatchAdversarialLoss`, ``criterion="least_squares"``, no output activation).

Losses (paper weights): adversarial 1 (both translations), image reconstruction 10 (L1), content reconstruction 1
and style reconstruction 1 (L1 between the codes and the codes re-encoded from the translations). Optional: the
paper's explicit style-augmented cycle consistency (``recon_x_cyc_w``, L1 between x and x translated there and back
with its own style; 0 in the paper's main configs) and, our addition, a structure loss (``struct_w``) that keeps
the HQ anatomy in the translation (see :func:`structure_loss`).

All stochastic choices (the sampled style codes) are inputs: the networks themselves are deterministic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
import torch.nn.functional as F

from dxr_core.errors import OptionError

__all__ = ["MunitConfig", "MUNIT_PRESETS", "get_munit_config", "ContentEncoder", "StyleEncoder", "Decoder",
           "AutoEncoder", "MunitGenerators", "MultiScaleDiscriminator", "MunitDiscriminators", "munit_losses",
           "discriminator_loss", "count_parameters"]


@dataclass
class MunitConfig:
    """Network sizes and loss weights. Defaults = the paper (Huang et al. 2018, Sec. 5 and their configs)."""

    width: int = 64          # base channel count of the encoders / discriminators
    style_dim: int = 8
    n_down: int = 2          # downsamplings in the content encoder (and upsamplings in the decoder)
    n_res: int = 4           # residual blocks in the content encoder and in the decoder
    mlp_dim: int = 256       # hidden width of the style MLP (3 layers)
    dis_width: int = 64
    dis_layers: int = 3      # PatchDiscriminator num_layers_d (with its stride-2 first conv: 4 convs of 4x4)
    n_scales: int = 3        # multi-scale discriminator
    in_channels: int = 1
    gan_w: float = 1.0
    recon_x_w: float = 10.0
    recon_c_w: float = 1.0
    recon_s_w: float = 1.0
    recon_x_cyc_w: float = 0.0   # paper's explicit style-augmented cycle consistency (off in its main configs)
    struct_w: float = 0.0        # ours: local normalised cross-correlation of x_ab with x_a (structure_loss)
    struct_pool: int = 2         # ... on copies average-pooled by this factor
    struct_kernel: int = 7       # ... in windows of this many (pooled) pixels
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4
    lr_step: int = 100_000   # learning rate halved every lr_step iterations
    batch_size: int = 1
    crop: int = 256
    image_size: int = 256    # whole radiographs are put on this grid (longer side, padded) before cropping

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MunitConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: ``paper``: the published defaults (256 crops, width 64, batch 1, lr 1e-4). ``cpu``: the same architecture at
#: width 16 with 3 residual blocks and a 64-wide style MLP, 128 crops of whole chests on a 256-px grid, batch 1,
#: lr 2e-4 halved every 20k iterations (a short CPU budget): 1.56 M generator parameters for both domains (3.1 MB in
#: float16), about 1-2 s per iteration on one CPU thread. ``cpu-struct``: ``cpu`` plus the structure loss (weight 1,
#: 2x pooled, 7-px windows): MUNIT alone redraws the anatomy of the DRRs' few CTs into translations (SSIM to the source
#: fell to 0.44 in 9,000 iterations), the structure loss keeps the radiograph's anatomy and leaves its texture and
#: tone to the LQ style. ``tiny``: tests.
MUNIT_PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": dict(width=16, n_res=3, mlp_dim=64, dis_width=16, crop=128, image_size=256, batch_size=1, lr=2e-4,
                lr_step=20_000),
    "cpu-struct": dict(width=16, n_res=3, mlp_dim=64, dis_width=16, crop=128, image_size=256, batch_size=1,
                       lr=2e-4, lr_step=20_000, struct_w=1.0),
    "tiny": dict(width=8, n_res=1, mlp_dim=16, dis_width=8, dis_layers=2, n_scales=2, crop=32, image_size=64,
                 batch_size=2, lr=1e-3, lr_step=10_000),
}


def get_munit_config(preset: str = "cpu", **overrides) -> MunitConfig:
    if preset not in MUNIT_PRESETS:
        raise OptionError(f"Unknown MUNIT preset {preset!r}; choose one of {', '.join(MUNIT_PRESETS)}.")
    return MunitConfig(**{**MUNIT_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(cin: int, cout: int, k: int, stride: int = 1, norm: str | None = "in", act: bool = True) -> nn.Sequential:
    pad = k // 2 if stride == 1 else 1  # 4x4 stride 2 with padding 1 halves the size exactly
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad), nn.Conv2d(cin, cout, k, stride)]
    if norm == "in":
        layers.append(nn.InstanceNorm2d(cout, affine=False))
    elif norm == "ln":
        layers.append(nn.GroupNorm(1, cout))  # layer norm over (C, H, W), per-channel affine (as MUNIT's LayerNorm)
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs with instance norm; ReLU after the first; identity skip."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(_conv(dim, dim, 3), _conv(dim, dim, 3, act=False))

    def forward(self, x):
        return x + self.block(x)


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: instance-normalise ``x`` then scale/shift per sample and channel."""
    return F.instance_norm(x, eps=eps) * gamma[:, :, None, None] + beta[:, :, None, None]


class AdaINResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.pad1, self.conv1 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3)
        self.pad2, self.conv2 = nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3)
        self.dim = dim

    def forward(self, x, params):  # params: (B, 4 * dim) = gamma1, beta1, gamma2, beta2
        g1, b1, g2, b2 = params.split(self.dim, dim=1)
        h = F.relu(adain(self.conv1(self.pad1(x)), g1, b1))
        h = adain(self.conv2(self.pad2(h)), g2, b2)
        return x + h


class ContentEncoder(nn.Module):
    def __init__(self, cfg: MunitConfig):
        super().__init__()
        w = cfg.width
        layers = [_conv(cfg.in_channels, w, 7)]
        for _ in range(cfg.n_down):
            layers.append(_conv(w, 2 * w, 4, stride=2))
            w *= 2
        layers += [ResBlock(w) for _ in range(cfg.n_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = w

    def forward(self, x):
        return self.net(x)


class StyleEncoder(nn.Module):
    def __init__(self, cfg: MunitConfig):
        super().__init__()
        w = cfg.width
        layers = [_conv(cfg.in_channels, w, 7, norm=None)]
        for _ in range(cfg.n_down):
            layers.append(_conv(w, 2 * w, 4, stride=2, norm=None))
            w *= 2
        for _ in range(2):
            layers.append(_conv(w, w, 4, stride=2, norm=None))
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Conv2d(w, cfg.style_dim, 1))

    def forward(self, x):
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    def __init__(self, cfg: MunitConfig):
        super().__init__()
        w = cfg.width * 2 ** cfg.n_down
        self.res = nn.ModuleList(AdaINResBlock(w) for _ in range(cfg.n_res))
        self.n_adain = 4 * w * cfg.n_res
        self.mlp = nn.Sequential(nn.Linear(cfg.style_dim, cfg.mlp_dim), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_dim, cfg.mlp_dim), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_dim, self.n_adain))
        up = []
        for _ in range(cfg.n_down):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(w, w // 2, 5, norm="ln")]
            w //= 2
        up += [nn.ReflectionPad2d(3), nn.Conv2d(w, cfg.in_channels, 7), nn.Tanh()]
        self.up = nn.Sequential(*up)
        self.width = cfg.width * 2 ** cfg.n_down

    def adain_params(self, style: torch.Tensor) -> torch.Tensor:
        p = self.mlp(style)
        # the MLP predicts (gamma - 1): an untrained decoder starts near plain instance norm
        w = self.width
        p = p.view(p.shape[0], -1, 4, w)
        one = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=p.dtype, device=p.device)[None, None, :, None]
        return (p + one).view(p.shape[0], -1)

    def forward(self, content, style):
        params = self.adain_params(style)
        h = content
        for i, blk in enumerate(self.res):
            h = blk(h, params[:, i * 4 * self.width:(i + 1) * 4 * self.width])
        return self.up(h)


class AutoEncoder(nn.Module):
    """One domain: content encoder, style encoder, AdaIN decoder."""

    def __init__(self, cfg: MunitConfig):
        super().__init__()
        self.enc_content = ContentEncoder(cfg)
        self.enc_style = StyleEncoder(cfg)
        self.dec = Decoder(cfg)

    def encode(self, x):
        return self.enc_content(x), self.enc_style(x)

    def decode(self, content, style):
        return self.dec(content, style)


def _init_weights(m: nn.Module) -> None:  # MUNIT "kaiming" init for the generators
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class MunitGenerators(nn.Module):
    """Both auto-encoders (``gen_a`` HQ, ``gen_b`` LQ). ``forward`` computes everything one training step needs
    (one call, so DistributedDataParallel sees one forward per backward)."""

    def __init__(self, cfg: MunitConfig):
        super().__init__()
        self.cfg = cfg
        self.gen_a = AutoEncoder(cfg)
        self.gen_b = AutoEncoder(cfg)
        self.apply(_init_weights)

    def forward(self, x_a, x_b, s_a, s_b) -> dict[str, torch.Tensor]:
        """``x_a``/``x_b`` images in [-1, 1]; ``s_a``/``s_b`` style codes drawn from the prior N(0, I)."""
        c_a, s_a_prime = self.gen_a.encode(x_a)
        c_b, s_b_prime = self.gen_b.encode(x_b)
        x_a_recon = self.gen_a.decode(c_a, s_a_prime)
        x_b_recon = self.gen_b.decode(c_b, s_b_prime)
        x_ba = self.gen_a.decode(c_b, s_a)  # LQ content, HQ style
        x_ab = self.gen_b.decode(c_a, s_b)  # HQ content, LQ style: the MUNIT-LQ translation
        c_b_recon, s_a_recon = self.gen_a.encode(x_ba)
        c_a_recon, s_b_recon = self.gen_b.encode(x_ab)
        out = dict(c_a=c_a, c_b=c_b, s_a=s_a, s_b=s_b, x_a_recon=x_a_recon, x_b_recon=x_b_recon, x_ba=x_ba,
                   x_ab=x_ab, c_a_recon=c_a_recon, c_b_recon=c_b_recon, s_a_recon=s_a_recon, s_b_recon=s_b_recon)
        if self.cfg.recon_x_cyc_w > 0:  # back to each image's own domain with its own style (paper, appendix)
            out["x_aba"] = self.gen_a.decode(c_a_recon, s_a_prime)
            out["x_bab"] = self.gen_b.decode(c_b_recon, s_b_prime)
        return out

    @torch.no_grad()
    def translate_ab(self, x_a, s_b):
        c_a = self.gen_a.enc_content(x_a)
        return self.gen_b.decode(c_a, s_b)


class MultiScaleDiscriminator(nn.Module):
    """``n_scales`` PatchDiscriminators (MONAI) on the image and on 2x-downsampled copies (3x3 average pooling,
    stride 2, as MUNIT). Returns the list of patch logits, finest scale first."""

    def __init__(self, cfg: MunitConfig):
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.nets = nn.ModuleList(
            PatchDiscriminator(spatial_dims=2, channels=cfg.dis_width, in_channels=cfg.in_channels, out_channels=1,
                               num_layers_d=cfg.dis_layers, kernel_size=4, norm=None, bias=True)
            for _ in range(cfg.n_scales))

    def forward(self, x) -> list[torch.Tensor]:
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x)[-1])
        return outs


class MunitDiscriminators(nn.Module):
    """Both domains' discriminators; ``forward(x_a, x_b)`` returns (logits of a, logits of b)."""

    def __init__(self, cfg: MunitConfig):
        super().__init__()
        self.dis_a = MultiScaleDiscriminator(cfg)
        self.dis_b = MultiScaleDiscriminator(cfg)

    def forward(self, x_a, x_b):
        return self.dis_a(x_a), self.dis_b(x_b)


def _adv():
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion="least_squares", reduction="mean", no_activation_leastsq=True)


def discriminator_loss(cfg: MunitConfig, logits_real: list, logits_fake: list) -> torch.Tensor:
    """LSGAN discriminator loss, summed over scales (real -> 1, fake -> 0)."""
    adv = _adv()
    n = len(logits_real)
    return cfg.gan_w * n * (adv(logits_real, target_is_real=True, for_discriminator=True)
                            + adv(logits_fake, target_is_real=False, for_discriminator=True))


def structure_loss(cfg: MunitConfig, x_ab: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
    """Negative squared local normalised cross-correlation (MONAI ``LocalNormalizedCrossCorrelationLoss``, -1 = same
    structure) of the translation ``x_ab`` with its source ``x_a`` (B, 1, H, W), both average-pooled by
    ``struct_pool``. Local NCC is blind to a local linear change of grey levels, so the LQ style may change tone,
    contrast and (below the pooled scale) texture, but not where the anatomy is: that is what the LQ/HQ training
    pairs of DDPM-HQ need. Our addition, not in the paper (which has only the unpaired losses)."""
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    k, r = cfg.struct_pool, cfg.struct_kernel // 2
    a, b = (F.avg_pool2d(t, k) if k > 1 else t for t in (x_ab, x_a))
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=cfg.struct_kernel, smooth_dr=1e-4,
                                               reduction="none")
    # its windows are zero-padded, so a change of grey level would count at the border: drop the border
    return lncc(a, b)[..., r:-r, r:-r].mean()


def munit_losses(cfg: MunitConfig, x_a, x_b, out: dict, logits_ab: list, logits_ba: list) -> dict[str, torch.Tensor]:
    """Generator losses of one step: ``total`` and its terms (paper weights from ``cfg``)."""
    adv = _adv()
    l1 = F.l1_loss
    n = len(logits_ab)
    terms = {
        "adv_a": n * adv(logits_ba, target_is_real=True, for_discriminator=False),
        "adv_b": n * adv(logits_ab, target_is_real=True, for_discriminator=False),
        "recon_x_a": l1(out["x_a_recon"], x_a), "recon_x_b": l1(out["x_b_recon"], x_b),
        "recon_c_a": l1(out["c_a_recon"], out["c_a"]), "recon_c_b": l1(out["c_b_recon"], out["c_b"]),
        "recon_s_a": l1(out["s_a_recon"], out["s_a"]), "recon_s_b": l1(out["s_b_recon"], out["s_b"]),
    }
    total = (cfg.gan_w * (terms["adv_a"] + terms["adv_b"])
             + cfg.recon_x_w * (terms["recon_x_a"] + terms["recon_x_b"])
             + cfg.recon_c_w * (terms["recon_c_a"] + terms["recon_c_b"])
             + cfg.recon_s_w * (terms["recon_s_a"] + terms["recon_s_b"]))
    zero = total.new_zeros(())
    terms["recon_cyc"] = (l1(out["x_aba"], x_a) + l1(out["x_bab"], x_b)) if "x_aba" in out else zero
    terms["struct"] = structure_loss(cfg, out["x_ab"], x_a) if cfg.struct_w > 0 else zero
    total = total + cfg.recon_x_cyc_w * terms["recon_cyc"] + cfg.struct_w * terms["struct"]
    terms["total"] = total
    return terms


CHECKPOINT_FORMAT = "dxr-munit-lq-1"


class MunitTranslator:
    """A trained MUNIT-LQ generator pair, loaded from / saved to a plain file (tensors + JSON strings).

    ``translate(hq, seed=...)``: content of the HQ radiograph + an LQ (DRR) style drawn from the prior N(0, I);
    ``translate(hq, style_from=drr)``: the style encoded from a given DRR. The model works on the grid it was
    trained on (whole radiographs with the longer side ``config.image_size`` pixels): the input is resized to
    it (area averaging), translated, and returned at that size or resized to ``out_shape``.
    """

    def __init__(self, generators: MunitGenerators, cfg: MunitConfig, meta: dict | None = None, device: str = "cpu"):
        self.cfg, self.meta = cfg, dict(meta or {})
        self.device = torch.device(device)
        self.net = generators.to(self.device).float().eval().requires_grad_(False)

    # ---- files
    def state(self, half: bool = False) -> dict:
        import json

        sd = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        if half:
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        return {"format": CHECKPOINT_FORMAT, "config": json.dumps(self.cfg.to_dict()),
                "meta": json.dumps(self.meta, default=str), "state_dict": sd}

    def save(self, path, half: bool = False):
        from pathlib import Path

        from dxr_core.io.atomic import atomic_path

        with atomic_path(path) as tmp:
            torch.save(self.state(half), tmp)
        return Path(path)

    @classmethod
    def load(cls, path, device: str = "cpu") -> "MunitTranslator":
        import json
        from pathlib import Path

        from dxr_core.errors import ModelError

        p = Path(path)
        if p.is_dir():
            p = p / "model.pt"
        if not p.is_file():
            raise ModelError(f"No MUNIT-LQ model at {p}; pass a file written by `dxr train munit-lq` (RUN/model.pt).")
        try:
            st = torch.load(p, map_location="cpu", weights_only=True)  # tensors + strings only: no code runs
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise ModelError(f"{p} is not a readable MUNIT-LQ model ({type(err).__name__}); pass RUN/model.pt "
                             "written by `dxr train munit-lq`.") from None
        if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
            raise ModelError(f"{p} is not a MUNIT-LQ model (format {CHECKPOINT_FORMAT}); pass RUN/model.pt written "
                             "by `dxr train munit-lq`.")
        cfg = MunitConfig.from_dict(json.loads(st["config"]))
        net = MunitGenerators(cfg)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st["state_dict"].items()})
        return cls(net, cfg, json.loads(st.get("meta") or "{}"), device=device)

    # ---- translation
    def _to_grid(self, image, size: int | None) -> tuple[torch.Tensor, tuple[int, int]]:
        import numpy as np
        from skimage.transform import resize

        img = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
        if img.ndim != 2:
            from dxr_core.errors import InputError

            raise InputError(f"MUNIT-LQ translates one 2-D radiograph (H, W), got shape {img.shape}.")
        side = int(size or self.cfg.image_size)
        f = side / max(img.shape)
        shape = (max(4, round(img.shape[0] * f)), max(4, round(img.shape[1] * f)))
        if shape != img.shape:
            img = resize(img, shape, order=1, anti_aliasing=f < 1, preserve_range=True).astype(np.float32)
        m = 2 ** self.cfg.n_down
        ph, pw = (-shape[0]) % m, (-shape[1]) % m
        x = torch.from_numpy(np.ascontiguousarray(img))[None, None] * 2 - 1
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        return x.to(self.device), shape

    def style_code(self, seed: int | None = 0, style_from=None, size: int | None = None) -> torch.Tensor:
        """(1, style_dim) LQ style: encoded from the DRR ``style_from``, or drawn from N(0, I) with ``seed``."""
        if style_from is not None:
            x, _ = self._to_grid(style_from, size)
            with torch.no_grad():
                return self.net.gen_b.enc_style(x)
        g = torch.Generator().manual_seed(int(seed or 0) & 0xFFFFFFFFFFFF)
        return torch.randn(1, self.cfg.style_dim, generator=g).to(self.device)

    def translate(self, hq_image, seed: int | None = 0, style_from=None, size: int | None = None,
                  out_shape: tuple[int, int] | None = None):
        """HQ radiograph (float (H, W) in [0, 1]) -> its LQ (DRR-like) version, float32 in [0, 1].

        Same inputs and seed, same output. ``size``: working grid (longer side, default the training grid).
        """
        import numpy as np

        x, shape = self._to_grid(hq_image, size)
        s = self.style_code(seed, style_from, size)
        with torch.no_grad():
            y = self.net.translate_ab(x, s)
        out = ((y[0, 0, :shape[0], :shape[1]].float().cpu().numpy() + 1) / 2).clip(0, 1).astype(np.float32)
        if out_shape is not None and tuple(out_shape) != out.shape:
            from skimage.transform import resize

            out = resize(out, tuple(out_shape), order=3, anti_aliasing=out_shape[0] < out.shape[0],
                         preserve_range=True).clip(0, 1).astype(np.float32)
        return out


def shipped_model():
    """The shipped MUNIT-LQ model (``dxr_core/weights/munit_lq_*.pt`` that has its ``.md`` model card), or None."""
    from dxr_core.weights import shipped

    return shipped("munit_lq_")


_CACHE: dict = {}


def load_translator(model=None) -> MunitTranslator:
    """A :class:`MunitTranslator` from ``model`` (a RUN folder or model file; default: the shipped model), cached."""
    from pathlib import Path

    from dxr_core.errors import ModelError

    if model is None:
        model = shipped_model()
        if model is None:
            raise ModelError("No shipped MUNIT-LQ model (dxr_core/weights/munit_lq_*.pt with its .md model card) "
                             "was found; reinstall the package, or train one with `dxr train munit-lq` and pass "
                             "model=RUN/model.pt.")
    p = Path(model).expanduser()
    p = p / "model.pt" if p.is_dir() else p
    if not p.is_file():
        raise ModelError(f"No MUNIT-LQ model at {str(p)!r}; give RUN/model.pt written by `dxr train munit-lq`.")
    key = (str(p.resolve()), p.stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = MunitTranslator.load(p)
    return _CACHE[key]


def translate(hq_image, seed: int | None = 0, style_from=None, model=None, out_shape=None):
    """HQ radiograph -> DRR-like LQ version with MUNIT-LQ: LQ style from the prior N(0, I) (``seed``) or encoded
    from the DRR image ``style_from``. ``model``: RUN folder / model file (default: the shipped model)."""
    return load_translator(model).translate(hq_image, seed=seed, style_from=style_from, out_shape=out_shape)
