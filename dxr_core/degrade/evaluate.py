"""How DRR-like an LQ synthesis is: held-out HQ radiographs made LQ by each method, compared with real DRRs.

Every HQ image is put on a ``grid`` x ``grid`` square (:func:`dxr_core.metrics.domain.prepare`) and made LQ at half
size by each method (``degrade``, seed ``seed + i``); the DRR references are put on the same LQ grid. Per set:
spectrum distance, histogram distance and classifier two-sample test accuracy against the DRRs
(:func:`dxr_core.metrics.domain.domain_gap`), and the mean SSIM of each LQ image to its HQ source on the LQ grid
(area averaging): the content that is kept. A method that changes the tone (the grey-level curve, as DDPM-LQ's
tone stage does) loses SSIM for that alone, so a second SSIM compares with the source given the LQ image's own
tone (:func:`dxr_core.degrade.tone.match_tone`, a monotone grey-level map): the anatomy that is kept.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["evaluate_lq_methods", "format_lq_table"]

SOURCE_ROW = "HQ (area-downsampled, no degradation)"


def evaluate_lq_methods(hq_images: list[np.ndarray], drr_refs: list[np.ndarray],
                        methods: Mapping[str, tuple[str, Mapping[str, Any]] | Callable], seed: int = 0,
                        grid: int = 256, hq_groups: list | None = None, drr_groups: list | None = None,
                        look_crop: float = 1.0) -> dict:
    """``methods``: row name -> (degrade method, its options), e.g. ``{"ddpm": ("ddpm", {"model": path})}``, or
    a function ``f(hq_on_grid, i) -> lq`` (e.g. a translator held in memory). ``hq_groups`` / ``drr_groups``: the
    patient of each HQ image and the CT of each DRR; given, the classifier test splits by patient
    (:func:`dxr_core.metrics.domain.classifier_two_sample_test`). ``look_crop`` < 1: the gap measures see only the
    central ``look_crop`` of every image's side (LQ sets and DRRs alike), i.e. the look inside the chest without the
    framing (body outline, arms, a CT's field of view); SSIM to the source stays on the whole image."""
    from dxr_core.degrade import degrade
    from dxr_core.degrade.tone import match_tone, tone_quantiles
    from dxr_core.metrics import ssim
    from dxr_core.metrics.domain import central_crop, domain_gap, prepare

    if not 0 < look_crop <= 1:
        raise ValueError(f"look_crop must be in (0, 1], got {look_crop}")

    lq_grid = grid // 2
    hq = [prepare(x, grid) for x in hq_images]
    src = [prepare(x, lq_grid) for x in hq]
    refs = [prepare(x, lq_grid) for x in drr_refs]
    sets = {SOURCE_ROW: src}
    for name, how in methods.items():
        if callable(how):
            sets[name] = [np.asarray(how(x, i), np.float32) for i, x in enumerate(hq)]
        else:
            method, options = how
            sets[name] = [degrade(x, method, seed=seed + i, **dict(options)) for i, x in enumerate(hq)]
    rows = {}
    refs_look = [central_crop(x, look_crop) for x in refs]
    for name, imgs in sets.items():
        g = domain_gap(refs_look, [central_crop(x, look_crop) for x in imgs], size=refs_look[0].shape[-1],
                       seed=seed, groups_a=drr_groups, groups_b=hq_groups)
        rows[name] = {"spectrum": g["spectrum"]["distance"], "high_freq": g["spectrum"]["high_freq_difference"],
                      "histogram": g["histogram"]["distance"],
                      "c2st_accuracy": g["c2st"]["accuracy"] if g["c2st"] else None,
                      "c2st_p": g["c2st"]["p_value"] if g["c2st"] else None,
                      "ssim_to_source": float(np.mean([ssim(a, b) for a, b in zip(imgs, src)])),
                      "ssim_same_tone": float(np.mean([ssim(a, match_tone(b, tone_quantiles(a)))
                                                       for a, b in zip(imgs, src)]))}
    return {"n_hq": len(hq), "n_drr": len(refs), "lq_grid": lq_grid, "rows": rows,
            "c2st_split": "random halves" if hq_groups is None else "by patient / CT", "look_crop": look_crop}


def format_lq_table(res: dict, title: str = "") -> str:
    lines = [f"{res['n_hq']} held-out HQ radiographs vs {res['n_drr']} real DRRs, LQ grid {res['lq_grid']} px, "
             f"C2ST split {res.get('c2st_split', 'random halves')}" + (f" ({title})" if title else ""),
             "| LQ set | spectrum distance | high-freq (set - DRR) | histogram W1 | C2ST accuracy "
             "| SSIM to HQ source | same tone |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        acc = "-" if r["c2st_accuracy"] is None else f"{r['c2st_accuracy']:.2f}"
        lines.append(f"| {name} | {r['spectrum']:.3f} | {r['high_freq']:+.3f} | {r['histogram']:.3f} | {acc} | "
                     f"{r['ssim_to_source']:.3f} | {r['ssim_same_tone']:.3f} |")
    return "\n".join(lines)
