"""Aligned LQ/HQ training pairs from real radiographs: HQ at the enhancer's output scale, LQ by a degradation.

    >>> make_pairs(files, "pairs/", method="mix", hq_size=1024, seed=0)   # pairs/hq/*.png 1024², pairs/lq/*.png 512²

HQ: each radiograph's central square (the shorter side), area-resampled to ``hq_size`` (no padding: an empty
border would inflate every metric). LQ: :func:`dxr_core.degrade.degrade` of the HQ with ``method`` at ``scale``;
``mix`` draws one method per pair from ``MIX`` (seeded, recorded in ``pairs.jsonl``; its ``high_order`` uses
the milder :data:`RADIOGRAPH_HIGH_ORDER` ranges). The layout (``lq/``, ``hq/``,
same file names) is what ``dxr train ddpm-hq --pairs`` reads. ``match_tone``: the LQ's grey levels are mapped
monotonically onto the HQ's quantiles (:func:`dxr_core.degrade.tone.match_tone`) so a pair differs in detail and
texture only, not in tone: a model trained on it restores detail without learning the LQ domain's grey-level
curve (which lowered inserted nodules' contrast by 16-45 % in a model trained on DDPM-LQ pairs, and which one
residual scale cannot share with plain-resampling pairs in a mixture). Pairs already written are skipped (resume);
every file is written atomically, the LQ last.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dxr_core.errors import OptionError

#: ``high_order`` ranges for radiographs: Real-ESRGAN's defaults (noise up to 30/255, resizes down to 0.15x, JPEG
#: 30) are made for web photographs and drown a radiograph's low-contrast lung structure; these keep the chain's
#: kinds (blur, resize, gaussian/Poisson noise, JPEG) at the strengths of acquired and exported radiographs
RADIOGRAPH_HIGH_ORDER = {"blur_sigma": (0.2, 1.5), "blur_sigma2": (0.2, 1.0), "resize_range": (0.5, 1.2),
                         "resize_range2": (0.8, 1.2), "noise_sigma": (0.5 / 255, 4 / 255),
                         "noise_sigma2": (0.5 / 255, 3 / 255), "poisson_scale": (0.05, 0.5),
                         "poisson_scale2": (0.05, 0.4), "jpeg_quality": (70, 95), "jpeg_quality2": (75, 95)}
#: methods a ``mix`` draws from: (weight, options). Mostly plain downsampling (what a user's own radiographs look
#: like at half size) plus the mild chain above, so the model does not amplify noise it never saw
MIX = {"area": (0.5, {}), "bicubic": (0.2, {}), "high_order": (0.3, RADIOGRAPH_HIGH_ORDER)}


def central_square(image: np.ndarray, size: int) -> np.ndarray:
    """The central square of ``image`` (side = the shorter side), area-resampled to ``size`` x ``size``."""
    from dxr_core.degrade.resize import resize_torch

    h, w = image.shape
    s = min(h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    sq = np.ascontiguousarray(image[r0:r0 + s, c0:c0 + s], dtype=np.float32)
    return sq if s == size else resize_torch(sq, (size, size), "area")


def pair_name(source: Path, variant: int) -> str:
    return f"{source.stem}_{variant}" if variant else source.stem


def make_pairs(files: Sequence[str | os.PathLike], out: str | os.PathLike, method: str = "mix", hq_size: int = 1024,
               scale: float = 2.0, seed: int = 0, variants: int = 1, progress: bool = True,
               methods: Iterable[str] | None = None, options: dict | None = None,
               match_tone: bool = False) -> list[dict]:
    """Write ``out/hq/<name>.png`` and ``out/lq/<name>.png`` for each file (``variants`` LQ versions each) and
    return the records of ``out/pairs.jsonl`` (name, source, method, seed, the sampled chain). ``options``: the
    options of a single ``method`` (e.g. ``{"model": "RUN/model.pt"}`` for ``munit`` / ``ddpm``)."""
    from tqdm.auto import tqdm

    from dxr_core.degrade.api import METHODS, degrade
    from dxr_core.degrade.api import image_seed
    from dxr_core.degrade.tone import match_tone as map_tone, tone_quantiles
    from dxr_core.io.atomic import write_text_atomic
    from dxr_core.io.radiograph import read_radiograph, write_radiograph

    pool = dict(MIX) if methods is None else {m: (1.0, {}) for m in methods}
    if method != "mix" and method not in METHODS:
        raise OptionError(f"Unknown method {method!r}; use mix or one of {', '.join(METHODS)}.")
    if not 16 <= int(hq_size) <= 8192:
        raise OptionError(f"hq_size {hq_size} is out of range; use 16..8192 (1024: the enhancer's output scale).")
    out = Path(out).expanduser()
    (out / "hq").mkdir(parents=True, exist_ok=True)
    (out / "lq").mkdir(parents=True, exist_ok=True)
    log = out / "pairs.jsonl"
    records = {}
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["name"]] = rec
    names = sorted(pool)
    weights = np.array([pool[m][0] for m in names], dtype=np.float64)
    weights /= weights.sum()
    files = sorted(Path(f) for f in files)
    for f in tqdm(files, desc=f"pairs {method}", unit="image", disable=not progress or None):
        hq = None
        for v in range(int(variants)):
            name = pair_name(f, v)
            if name in records and (out / "lq" / f"{name}.png").is_file():
                continue  # resume: the LQ is written last
            if hq is None:
                img, _spacing, _meta = read_radiograph(f)
                hq = central_square(img, int(hq_size))
            s = image_seed(seed, name)
            m = method if method != "mix" else names[int(np.random.default_rng(s).choice(len(names), p=weights))]
            opts = pool[m][1] if method == "mix" else dict(options or {})
            lq, params = degrade(hq, m, seed=s, scale=scale, return_params=True, **opts)
            if match_tone:
                lq = map_tone(lq, tone_quantiles(hq))
                params = {**params, "match_tone": True}
            write_radiograph(hq, None, out / "hq" / f"{name}.png")
            write_radiograph(lq, None, out / "lq" / f"{name}.png")
            rec = {"name": name, "source": f.name, "method": m, "seed": s, "hq_size": int(hq_size),
                   "lq_size": list(lq.shape), **{k: v for k, v in params.items() if k not in ("method",)}}
            records[name] = json.loads(json.dumps(rec, default=str))  # as it reads back from pairs.jsonl
            write_text_atomic(log, "".join(json.dumps(records[k], default=str) + "\n" for k in sorted(records)))
    return [records[k] for k in sorted(records)]
