"""The main job on the built-in default: procedural chest phantom -> nodules -> DRR -> DDPM-HQ enhancement.

``dxr demo --out DIR`` runs it end to end with the shipped weights; every step is a public library call, so this
file doubles as the shortest tour of the toolkit.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dxr_core.errors import ModelError
from dxr_core.io.atomic import write_text_atomic


def run_demo(out_dir: str | Path, seed: int = 0, size: int = 512, n_nodules: int = 2, views: tuple[str, ...] = ("pa",),
             enhance: bool = True, steps: int | None = None, sampler: str | None = None, log=print) -> dict:
    """Render DRRs of phantom ``seed`` with ``n_nodules`` labelled nodules, then enhance them 2x.

    Writes ``<view>.{dcm,png,nrrd,json}`` + ``<view>.coco.json`` and, when weights are installed,
    ``<view>_enhanced.{png,dcm}`` into ``out_dir``; returns a summary dict (also written as ``summary.json``).
    """
    from dxr_core.io import read_radiograph, write_drr, write_radiograph
    from dxr_core.nodules import rescale_coco, to_coco, write_coco
    from dxr_core.params import DRRParams
    from dxr_core.phantom import make_chest_phantom
    from dxr_core.pipeline import enhance_drr, render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seed": seed, "size": size, "views": {}}
    t0 = time.perf_counter()
    log(f"[demo] voxelising chest phantom (seed {seed}) ...")
    ct = make_chest_phantom(seed=seed)
    summary["ct"] = {"shape_xyz": list(ct.shape_xyz), "spacing_mm": list(ct.spacing),
                     "seconds": round(time.perf_counter() - t0, 2)}

    enhancer = None
    if enhance:
        from dxr_core.diffusion import load_enhancer

        try:
            enhancer = load_enhancer()
        except ModelError as err:  # the DRRs are still worth having; say why enhancement was skipped
            log(f"[demo] enhancement skipped: {err}")
            summary["enhance_skipped"] = str(err)

    for view in views:
        t1 = time.perf_counter()
        # the one pipeline (as `dxr dataset` and the MONAI Label tasks): poly 120 kVp, nodules placed with seed
        p = DRRParams.from_request({"view": view, "size": size, "seed": seed, "nodules": n_nodules})
        drr, labels = render(ct, p)
        paths = write_drr(drr, out, view, extra_sidecar={"nodules": labels})
        coco = to_coco([(paths["png"].name, drr, labels)])
        write_coco(out / f"{view}.coco.json", coco)
        info: dict = {"drr_seconds": round(time.perf_counter() - t1, 2), "files": [p.name for p in paths.values()],
                      "nodules": [{k: lab[k] for k in ("category", "bbox", "diameter_mm", "visibility")}
                                  for lab in labels]}
        log(f"[demo] {view}: DRR {size}x{size} with {len(labels)} nodule(s) in {info['drr_seconds']} s -> "
            f"{paths['png']}")
        if enhancer is not None:
            t2 = time.perf_counter()
            sampler, steps = enhancer.resolve_sampling(sampler, steps)  # None: the model's defaults
            hq, grid, _hq_labels = enhance_drr(drr, labels, enhancer, scale=2.0, sampler=sampler, steps=steps,
                                               seed=seed)
            _, _, dcm_meta = read_radiograph(paths["dcm"])  # the enhanced DX carries the DRR's patient/study tags
            for ext in ("png", "dcm"):
                write_radiograph(hq, tuple(grid.pixel_spacing_mm), out / f"{view}_enhanced.{ext}",
                                 template_meta=dcm_meta, description=f"DDPM-HQ {sampler} {steps} steps x2")
            write_coco(out / f"{view}_enhanced.coco.json",
                       rescale_coco(coco, hq.shape, hq.shape[0] / size, hq.shape[1] / size,
                                    file_name=f"{view}_enhanced.png"))
            info["enhance_seconds"] = round(time.perf_counter() - t2, 2)
            info["enhanced_size"] = list(hq.shape)
            log(f"[demo] {view}: enhanced to {hq.shape[1]}x{hq.shape[0]} in {info['enhance_seconds']} s")
        summary["views"][view] = info
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    log(f"[demo] done in {summary['seconds']} s; outputs in {out}/")
    return summary


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="phantom -> nodules -> DRR -> enhanced DRR, on the built-in default")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=int, default=0, help="phantom, nodule, noise and sampler seed")
    p.add_argument("--size", type=int, default=512, help="DRR rows = columns (default 512; enhanced is 2x)")
    p.add_argument("--nodules", type=int, default=2, help="number of random nodules (default 2)")
    p.add_argument("--views", default="pa", help="comma-separated views: pa, ap, lateral (default pa)")
    p.add_argument("--no-enhance", action="store_true", help="stop after the DRRs")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps for the enhancement (default: the shipped model's, see its model card)")
    p.set_defaults(run=lambda a: 0 if run_demo(a.out, seed=a.seed, size=a.size, n_nodules=a.nodules,
                                               views=tuple(v.strip() for v in a.views.split(",") if v.strip()),
                                               enhance=not a.no_enhance, steps=a.steps) else 1)
