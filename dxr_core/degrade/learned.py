"""Learned degradations: MUNIT-LQ (a shipped or given model) and DDPM-LQ (a given stage-2 model)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dxr_core.errors import ModelError, OptionError


def shipped_munit_model() -> Path | None:
    """The shipped MUNIT-LQ model (``dxr_core/weights/munit_lq_*.pt``, with its ``.md`` model card), or None."""
    from dxr_core.models.munit import shipped_model

    return shipped_model()


def munit(image, out_shape, rng, *, model: str | None = None, style_from: str | None = None):
    """MUNIT-LQ (unpaired image-to-image translation HQ -> DRR-like LQ; Huang et al., ECCV 2018).

    The HQ content code is decoded with an LQ style drawn from the style prior N(0, I) (seeded by ``degrade``'s
    seed), or encoded from the DRR file ``style_from``. ``model``: a ``RUN/model.pt`` written by
    ``dxr train munit-lq`` (default: the shipped model). The translation runs on the model's training grid and is
    resized to the LQ shape.
    """
    if model is None and shipped_munit_model() is None:
        raise ModelError("No shipped MUNIT-LQ model (dxr_core/weights/munit_lq_*.pt with its .md model card) "
                         "was found; reinstall the package, or train one with `dxr train munit-lq` and pass "
                         "--option model=RUN/model.pt, or use --method ddpm (the shipped DDPM-LQ).")
    from dxr_core.models.munit import load_translator

    tr = load_translator(model)
    path = model if model is not None else shipped_munit_model()
    style = None
    if style_from is not None:
        from dxr_core.io.radiograph import read_radiograph

        style = read_radiograph(Path(style_from).expanduser())[0]
    seed = int(rng.integers(2 ** 31 - 1))
    out = tr.translate(image, seed=seed, style_from=style, out_shape=tuple(out_shape))
    return out, {"model": str(path), "style": "encoded from " + str(style_from) if style is not None
                 else f"N(0, I) seed {seed}", "model_iteration": tr.meta.get("iteration")}


def shipped_ddpm_lq_model() -> Path | None:
    """The shipped DDPM-LQ model (``dxr_core/weights/ddpm_lq_*.pt`` that has its ``.md`` model card), or None."""
    from dxr_core.weights import shipped

    return shipped("ddpm_lq_")


@functools.lru_cache(maxsize=4)
def _load_ddpm_lq(path: str, mtime_ns: int):
    """One load per model file (and version): ``make-pairs`` calls the method once per image."""
    from dxr_core.diffusion.enhancer import Enhancer

    return Enhancer.from_checkpoint(path)


def ddpm(image, out_shape, rng, *, model: str | None = None, steps: int = 10, sampler: str = "ddim",
         tone: bool = True, strength: float | None = None):
    """DDPM-LQ stage 2 (:mod:`dxr_core.engines.ddpm_lq`): the image's content (area-averaged by the model's
    ``content_scale`` on its ``image_size`` grid) is the condition; the diffusion model draws the DRR's fine
    structure around it (``steps`` network evaluations of ``sampler``, seeded by ``degrade``'s seed). The result
    is resized (area) to the LQ shape. ``model``: a ``RUN/model.pt`` written by ``dxr train ddpm-lq --stage 2``
    (default: the shipped model). ``tone``: first map the image's grey levels onto the tone of one training DRR
    drawn with the seed (:mod:`dxr_core.degrade.tone`; models that store the LQ domain's tone), so the result
    has a DRR's grey levels as well as its fine structure; ``tone=False`` keeps the input's. ``strength`` < 1:
    start the sampler from the (toned) image noised to that fraction of the schedule instead of from pure noise
    (SDEdit), keeping more of its own structure; 1 draws all fine structure anew; default: the model's
    recommended strength (``meta["ddpm_lq"]["strength"]``, set when it was shipped), else 1."""
    if model is None:
        model = shipped_ddpm_lq_model()
    if model is None:
        raise ModelError("The DDPM-LQ degradation model is not shipped yet; train one with `dxr train ddpm-lq "
                         "--stage 1` then `--stage 2` and pass --option model=RUN/model.pt, or use --method "
                         "high_order or --method acquisition.")
    from dxr_core.degrade.resize import resize_torch

    path = Path(model).expanduser()  # a missing file: Enhancer.from_checkpoint says so
    enh = _load_ddpm_lq(str(path), path.stat().st_mtime_ns if path.exists() else 0)
    info = enh.meta.get("ddpm_lq")
    if not info:
        raise ModelError(f"{model} is not a DDPM-LQ model (no 'ddpm_lq' record); give RUN/model.pt of "
                         "`dxr train ddpm-lq --stage 2`.")
    k, size = int(info["content_scale"]), int(info["image_size"])
    strength = float(info.get("strength", 1.0) if strength is None else strength)
    tones = info.get("tone") or []
    tone_index = None
    if _flag(tone) and tones:
        from dxr_core.degrade.tone import match_tone

        tone_index = int(rng.integers(len(tones)))
        image = match_tone(image, np.asarray(tones[tone_index]))
    h, w = image.shape
    # the model's grid: the short side at image_size, both sides multiples of the content scale
    f = size / min(h, w)
    grid = (max(k, round(h * f / k) * k), max(k, round(w * f / k) * k))
    src = resize_torch(image, grid, "area")
    content = resize_torch(src, (grid[0] // k, grid[1] // k), "area")
    seed = int(rng.integers(2 ** 31 - 1))
    init = None
    if strength < 1.0:
        import torch

        init = torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32))[None, None]
    out = enh.enhance(content, scale=k, sampler=sampler, steps=int(steps), seed=seed, tile=None,
                      out_size=grid, init=init, strength=strength)
    return resize_torch(out, tuple(out_shape), "area"), {
        "model": str(model), "model_stage": int(info.get("stage", 0)), "content_scale": k, "image_size": size,
        "model_iteration": enh.meta.get("iteration"), "sampler": sampler, "steps": int(steps), "seed_drawn": seed,
        "tone": "as given" if tone_index is None else f"training DRR {tone_index} of {len(tones)}",
        "strength": strength}


def _flag(value) -> bool:
    """A boolean option that may come from the command line (``--option tone=false``)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise OptionError(f"tone={value!r}: give true or false.")
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
