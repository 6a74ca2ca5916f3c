"""Learned degradations: MUNIT-LQ (a shipped or given model), DDPM-LQ (not shipped yet)."""
from __future__ import annotations

from pathlib import Path

from dxr_core.errors import ModelError


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
        raise ModelError("The MUNIT-LQ degradation model is not shipped yet (its training is still to come); "
                         "train one with `dxr train munit-lq` and pass --option model=RUN/model.pt, or use "
                         "--method high_order or --method acquisition for now.")
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


def ddpm(image, out_shape, rng, *, model: str | None = None):
    """DDPM-LQ (a diffusion model that learns the LQ appearance)."""
    raise ModelError("The DDPM-LQ degradation model is not shipped yet (its training is still to come); use "
                     "--method high_order or --method acquisition for now.")
