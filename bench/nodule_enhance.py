"""Do nodules survive DDPM-HQ? Contrast and CNR of inserted nodules before and after enhancement, per kind and size.

    .venv/bin/python bench/nodule_enhance.py [--ct CT] [--model PATH|shipped] [--sizes 6,10,20] [--seed 0]

``CT``: a chest CT (DICOM series folder, NIfTI, NRRD; default: the LIDC-IDRI-0006 sample of the tests). For each
kind (solid, part-solid, GGO) and diameter, one nodule is placed in the lung (``random_nodules``) and the default
DRR (``pa-chest`` preset, 512²) is rendered with and without it, same seed, so their difference is the nodule alone.
A 64² window around the nodule is enhanced 2x (the model's default sampling, same seed for both) and upsampled by
bicubic interpolation (the model's own condition: "before", on the same grid). Measures on the output grid:

- ``contrast``: mean of (with - without) over the nodule (where the bicubic difference exceeds half its peak);
- ``noise``: standard deviation of the high-pass (image minus its gaussian blur, sigma 2 px) of the image with the
  nodule in a ring 4-12 px outside the nodule;
- ``CNR`` = contrast / noise. The goal (the DDPM-HQ issue): after / before within 10 % for contrast and CNR.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("solid", "part_solid", "ggo")


def nodule_measures(with_nod: np.ndarray, without: np.ndarray, mask: np.ndarray, ring: np.ndarray) -> dict:
    from scipy.ndimage import gaussian_filter

    diff = with_nod - without
    hp = with_nod - gaussian_filter(with_nod, 2.0)
    contrast = float(diff[mask].mean())
    noise = float(hp[ring].std())
    return {"contrast": contrast, "noise": noise, "cnr": abs(contrast) / noise if noise > 0 else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", default=str(ROOT / "tests" / "data" / "lidc_idri_0006_small" / "lidc_idri_0006_small.nrrd"))
    ap.add_argument("--model", default="shipped")
    ap.add_argument("--sizes", default="6,10,20", help="nodule diameters in mm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from scipy.ndimage import binary_dilation

    torch.set_num_threads(args.threads)
    from dxr_core.diffusion import load_enhancer
    from dxr_core.diffusion.enhancer import bicubic_upsample
    from dxr_core.io.ct import read_ct
    from dxr_core.nodules import random_nodules
    from dxr_core.params import DRRParams
    from dxr_core.pipeline import render

    t0 = time.perf_counter()
    ct = read_ct(args.ct)
    enh = load_enhancer(None if args.model == "shipped" else args.model)
    sampler, steps = enh.resolve_sampling(None, None)
    base, _ = render(ct, DRRParams.from_request({"seed": args.seed, "size": 512}))
    print(f"nodule_enhance: CT {Path(args.ct).name}, model {args.model} ({sampler}-{steps}), pa-chest DRR 512^2, "
          f"64^2 windows -> 128^2")
    print("| kind | diameter mm | contrast before | after | ratio | CNR before | after | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = []
    for k, kind in enumerate(KINDS):
        for d in (float(v) for v in args.sizes.split(",")):
            place = random_nodules(ct, 1, seed=args.seed + 17 * k + int(d), kinds=[kind], shapes=["sphere"],
                                   location="intraparenchymal", diameter_range=(d, d))[0]
            req = {"seed": args.seed, "size": 512, "nodules": 1, "nodule_at": [list(map(float, place.center_lps))],
                   "nodule_kind": kind, "nodule_size": [d, d]}
            drr, labels = render(ct, DRRParams.from_request(req))
            col, row = labels[0]["centre_px"]
            r0 = int(np.clip(round(row) - 32, 0, 512 - 64))
            c0 = int(np.clip(round(col) - 32, 0, 512 - 64))
            win = np.s_[r0:r0 + 64, c0:c0 + 64]
            lq = {"with": drr.image[win], "without": base.image[win]}
            out = {name: enh.enhance(img, scale=2, seed=args.seed, tile=None) for name, img in lq.items()}
            bic = {name: bicubic_upsample(img, (128, 128)) for name, img in lq.items()}
            ref = bic["with"] - bic["without"]
            mask = np.abs(ref) > 0.5 * np.abs(ref).max()
            ring = binary_dilation(mask, iterations=12) & ~binary_dilation(mask, iterations=4)
            before = nodule_measures(bic["with"], bic["without"], mask, ring)
            after = nodule_measures(out["with"], out["without"], mask, ring)
            rc, rn = after["contrast"] / before["contrast"], after["cnr"] / before["cnr"]
            ratios.append((rc, rn))
            print(f"| {kind} | {d:g} | {before['contrast']:.4f} | {after['contrast']:.4f} | {rc:.3f} | "
                  f"{before['cnr']:.2f} | {after['cnr']:.2f} | {rn:.3f} |", flush=True)
    ok = sum(1 for rc, rn in ratios if 0.9 <= rc <= 1.1 and 0.9 <= rn <= 1.1)
    print(f"nodule_enhance: contrast and CNR within 10 % of before on {ok}/{len(ratios)} nodules (goal: all); "
          f"contrast ratio {min(r[0] for r in ratios):.3f}-{max(r[0] for r in ratios):.3f}, CNR ratio "
          f"{min(r[1] for r in ratios):.3f}-{max(r[1] for r in ratios):.3f}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
