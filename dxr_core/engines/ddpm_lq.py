"""DDPM-LQ: learn what a DRR looks like with the DDPM-HQ networks, noise schedules, samplers and Ignite engine,
in two stages.

* **Stage 1** - an unconditional diffusion model of LQ images (DRRs): the DDPM-HQ engine with the condition
  channel held at zero and the full image as the target (no residual).
* **Stage 2** - stage 1 fine-tuned with a condition: the image's *content*, i.e. the image area-averaged by
  ``content_scale`` (4: a 256² DRR -> 64²) and brought back by bicubic interpolation (what the DDPM-HQ engine does
  with its LQ input). Sampling stage 2 from the content of an HQ radiograph gives that radiograph's anatomy with a
  DRR's fine structure: its LQ version (``degrade(image, "ddpm")``).

Why the content and not the HQ image itself: the data are unpaired (no real radiograph has a DRR twin), so a
model cannot be taught p(LQ | HQ) directly. Coarse scales carry the anatomy that both domains share, fine scales
the look that differs (detector blur, noise texture, processing); stage 2 learns p(DRR | coarse(DRR)) on DRRs alone
and is applied to coarse(HQ). ``content_scale`` sets the split: larger keeps less of the source (lower SSIM to it)
and imposes more of the DRR look (measured by ``bench/domain_gap_lq.py``). Written by us: no library trains a
diffusion model this way; the networks, schedules, samplers and the engine are the DDPM-HQ ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dxr_core.errors import InputError, OptionError

__all__ = ["LQTrainConfig", "prepare_lq_images", "domain_tone", "train_ddpm_lq"]


@dataclass
class LQTrainConfig:
    stage: int
    lq: str  # folder of DRRs (the LQ domain)
    out: str  # run folder
    image_size: int = 256  # DRRs are resized to this grid (the model's working scale)
    content_scale: int = 4  # stage 2 condition: the image area-averaged by this factor
    init: str | None = None  # stage 2: the stage-1 model (RUN1/model.pt); required there
    train: dict = field(default_factory=dict)  # DDPM-HQ TrainConfig options (preset, iters, crop, lr, ...)

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise OptionError(f"--stage must be 1 or 2, got {self.stage}.")
        if self.stage == 2 and not self.init:
            raise OptionError("stage 2 fine-tunes stage 1: give --init STAGE1_RUN/model.pt.")
        if self.stage == 1 and self.init:
            raise OptionError("stage 1 starts from scratch; --init belongs to stage 2.")
        if not 2 <= int(self.content_scale) <= 16:
            raise OptionError(f"--content-scale must be 2..16, got {self.content_scale}.")
        if not 32 <= int(self.image_size) <= 4096 or self.image_size % self.content_scale:
            raise OptionError(f"--image-size must be 32..4096 and a multiple of --content-scale "
                              f"({self.content_scale}); got {self.image_size}.")


def prepare_lq_images(lq_dir: str | Path, out_dir: str | Path, image_size: int, content_scale: int) -> Path:
    """The DRRs of ``lq_dir`` as the DDPM-HQ engine reads pairs: ``out/hq/<name>.png`` (the central square at
    ``image_size``), ``out/lq/<name>.png`` (that area-averaged by ``content_scale``). Skips files already written,
    so a resumed run reuses them. Returns ``out_dir``."""
    from dxr_core.data.pairs import list_images, write_image
    from dxr_core.degrade.resize import resize_torch
    from dxr_core.io.radiograph import read_radiograph

    files = list_images(lq_dir)
    if not files:
        raise InputError(f"No images found in {str(lq_dir)!r}; give the folder of DRRs (PNG/NRRD/DICOM).")
    out = Path(out_dir)
    (out / "hq").mkdir(parents=True, exist_ok=True)
    (out / "lq").mkdir(parents=True, exist_ok=True)
    small = image_size // content_scale
    for f in files:
        name = f.name.split(".")[0] + ".png"
        hq_path, lq_path = out / "hq" / name, out / "lq" / name
        if hq_path.is_file() and lq_path.is_file():
            continue
        img = np.asarray(read_radiograph(f)[0], dtype=np.float32)
        s = min(img.shape)
        r0, c0 = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2
        hq = np.clip(resize_torch(img[r0:r0 + s, c0:c0 + s], (image_size, image_size), "area"), 0, 1)
        write_image(hq, hq_path)
        write_image(np.clip(resize_torch(hq, (small, small), "area"), 0, 1), lq_path)
    return out


def domain_tone(folder: str | Path) -> list[list[float]]:
    """The tone of the LQ domain (:mod:`dxr_core.degrade.tone`): one quantile function per prepared DRR, rounded
    to 1e-4 (they go into the model's metadata; ``degrade --method ddpm`` draws one per image)."""
    from dxr_core.data.pairs import list_images, read_image
    from dxr_core.degrade.tone import tone_quantiles

    return [[round(float(v), 4) for v in tone_quantiles(read_image(f))] for f in list_images(folder)]


def train_ddpm_lq(cfg: LQTrainConfig) -> dict:
    """Train (or resume) stage ``cfg.stage`` in ``cfg.out``; returns the DDPM-HQ engine's summary. The model
    (``RUN/model.pt``) records ``meta["ddpm_lq"]`` = stage, image size and content scale."""
    from dxr_core.engines.ddpm_hq import TrainConfig, train_ddpm_hq

    cfg.validate()
    out = Path(cfg.out)
    pairs = prepare_lq_images(cfg.lq, out / "images", cfg.image_size, cfg.content_scale)
    opts: dict[str, Any] = {"crop": min(128, cfg.image_size), "residual": False, **cfg.train}
    tc = TrainConfig(pairs=str(pairs), out=str(out), init=cfg.init,
                     condition="none" if cfg.stage == 1 else "lq",
                     extra_meta={"ddpm_lq": {"stage": cfg.stage, "image_size": cfg.image_size,
                                             "content_scale": cfg.content_scale, "lq": str(cfg.lq),
                                             "init": cfg.init, "tone": domain_tone(pairs / "hq")}},
                     **opts)
    summary = train_ddpm_hq(tc)
    summary["ddpm_lq"] = asdict(cfg)
    return summary
