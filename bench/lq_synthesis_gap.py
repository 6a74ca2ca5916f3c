"""How DRR-like is each LQ synthesis? Held-out real radiographs made LQ by bicubic / high_order / MUNIT-LQ / DDPM-LQ,
compared with real DRRs of a held-out CT (the paper's Figure 3 and the LQ-synthesis issue's table, ours).

    .venv/bin/python bench/lq_synthesis_gap.py --hq CXR_DIR --manifest split.csv [--hq DIR2 --manifest m2.csv] \
        --split val,test --drr DRR_DIR [--drr DRR_DIR2] [--munit RUN/model.pt] [--ddpm RUN2/model.pt] \
        [--out /tmp/lqgap] [--png docs/lq_synthesis.png]

``--manifest``: the patient-level split of ``dxr_core.data.radiographs.patient_split`` (never a training patient);
one per ``--hq`` folder, in the same order. ``--drr``: DRRs of CTs no LQ model was trained on (e.g. `dxr dataset
--enhance off` of held-out CTs with varied pose and kVp), one or more folders.
Every HQ image is put on a 256² grid and made LQ at 128² (seed = index); the DRRs on the same 128² grid. Per set
(``dxr_core.degrade.evaluate``): power-spectrum distance, regional histogram distance and classifier two-sample
test accuracy to the DRRs (50 % = indistinguishable), and SSIM to the HQ source (the content kept). Prints the
table, writes OUT/lq_synthesis_gap.json and, with ``--png``, rows of HQ | bicubic | MUNIT-LQ | DDPM-LQ | a real DRR.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hq", required=True, action="append", help="folder of real radiographs (repeatable)")
    ap.add_argument("--manifest", required=True, action="append",
                    help="patient-level split CSV (file, patient_id, split), one per --hq")
    ap.add_argument("--split", default="val,test", help="held-out splits to use (default val,test)")
    ap.add_argument("--drr", required=True, action="append", help="folder of real DRRs of held-out CTs (repeatable)")
    ap.add_argument("--drr-crop", type=float, default=1.0, metavar="F",
                    help="keep the central F of each DRR's side (0.75 drops the black surround of a CT's field of "
                         "view, framing the DRR like a radiograph; default 1: as rendered)")
    ap.add_argument("--look-crop", type=float, default=1.0, metavar="F",
                    help="the gap measures see only the central F of every image's side, LQ sets and DRRs alike: "
                         "the look inside the chest without the framing (SSIM stays whole-image; default 1)")
    ap.add_argument("--random-split", action="store_true",
                    help="C2ST on random halves (default: split by patient and CT, which needs 2+ CTs)")
    ap.add_argument("--munit", default=None, help="MUNIT-LQ model (RUN/model.pt)")
    ap.add_argument("--munit-style-dir", default=None, metavar="DIR",
                    help="also a MUNIT row whose style codes are encoded from these DRRs (training DRRs, image i "
                         "takes file i mod N) instead of drawn from the prior N(0, I)")
    ap.add_argument("--ddpm", default=None, help="DDPM-LQ stage-2 model (RUN/model.pt)")
    ap.add_argument("--ddpm-steps", type=int, default=10)
    ap.add_argument("--ddpm-strength", default=None, metavar="S[,S...]",
                    help="SDEdit strength(s) of DDPM-LQ (1: from pure noise; default: the model's own, 0.3 for the "
                         "shipped one); several give one row each")
    ap.add_argument("--out", default="/tmp/lq_synthesis_gap")
    ap.add_argument("--png", default=None, help="write the Figure-3 montage here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for flag, fraction in (("--drr-crop", args.drr_crop), ("--look-crop", args.look_crop)):
        if not 0 < fraction <= 1:
            raise SystemExit(f"{flag} must be in (0, 1], got {fraction}")

    import torch

    torch.set_num_threads(2)
    from dxr_core.data.radiographs import RadiographFolder, list_radiographs, load_radiograph
    from dxr_core.degrade.evaluate import evaluate_lq_methods, format_lq_table
    from dxr_core.metrics.domain import central_crop, groups_from_names

    t0 = time.perf_counter()
    if len(args.hq) != len(args.manifest):
        raise SystemExit("give one --manifest per --hq folder")
    hq, hq_groups = [], []
    for k, (folder, manifest) in enumerate(zip(args.hq, args.manifest)):
        ds = RadiographFolder(folder, manifest=manifest, split=args.split.split(","))
        hq += [ds.load(i) for i in range(len(ds))]
        hq_groups += [f"{k}:{ds.patients[str(f)]}" for f in ds.files]
    drr_files = [f for d in args.drr for f in list_radiographs(d)]
    refs = [central_crop(load_radiograph(f)[0], args.drr_crop) for f in drr_files]
    drr_groups = groups_from_names([f.name for f in drr_files])  # `dxr dataset` names images <CT>_<NNNN>
    by_group = not args.random_split
    methods: dict = {"bicubic": ("bicubic", {}), "high_order": ("high_order", {})}
    if args.munit:
        methods["munit"] = ("munit", {"model": args.munit})
        if args.munit_style_dir:
            from dxr_core.degrade import degrade

            styles = list_radiographs(args.munit_style_dir)
            methods["munit (DRR styles)"] = lambda x, i: degrade(x, "munit", seed=args.seed + i, model=args.munit,
                                                                 style_from=str(styles[i % len(styles)]))
    if args.ddpm:
        strengths = [None] if args.ddpm_strength is None else [float(v) for v in args.ddpm_strength.split(",")]
        for k, strength in enumerate(strengths):
            methods["ddpm" if k == 0 else f"ddpm strength {strength:g}"] = (
                "ddpm", {"model": args.ddpm, "steps": args.ddpm_steps, "strength": strength})
    res = evaluate_lq_methods(hq, refs, methods, seed=args.seed, hq_groups=hq_groups if by_group else None,
                              drr_groups=drr_groups if by_group else None, look_crop=args.look_crop)
    res["drr_cts"] = sorted(set(drr_groups))
    res["models"] = {"munit": args.munit, "ddpm": args.ddpm}
    res["seconds"] = time.perf_counter() - t0
    print(format_lq_table(res, f"splits {args.split}; DRRs: central {args.drr_crop:g} of each side; gap measures on "
                                f"the central {args.look_crop:g} of every image"))
    rows = res["rows"]
    if "bicubic" in rows:
        for name in rows:
            if name.startswith(("munit", "ddpm")):
                b, r = rows["bicubic"], rows[name]
                print(f"{name} vs bicubic: spectrum {b['spectrum'] / max(r['spectrum'], 1e-9):.2f}x closer, "
                      f"C2ST accuracy {r['c2st_accuracy']:.2f} vs {b['c2st_accuracy']:.2f}, SSIM to source "
                      f"{r['ssim_to_source']:.3f} (same tone {r['ssim_same_tone']:.3f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lq_synthesis_gap.json").write_text(json.dumps(res, indent=2))
    if args.png:
        figure(Path(args.png), hq, refs, methods, args.seed)
        print(f"picture: {args.png}")
    print(f"total {res['seconds']:.0f} s")
    return 0


def figure(path: Path, hq, refs, methods, seed: int, picks=(0, 3, 9)) -> None:
    from PIL import Image

    from dxr_core.degrade import degrade
    from dxr_core.metrics.domain import prepare

    cols = ["bicubic", "munit", "ddpm"]
    rows = []
    for k, i in enumerate(p for p in picks if p < len(hq)):
        x = prepare(hq[i], 256)
        row = [prepare(x, 128)]
        for name in cols:
            if name in methods:
                method, options = methods[name]
                row.append(degrade(x, method, seed=seed + i, **options))
            else:
                row.append(np.zeros((128, 128), np.float32))
        row.append(prepare(refs[(k * 7) % len(refs)], 128))
        rows.append(np.concatenate(row, 1))
    img = (np.concatenate(rows, 0).clip(0, 1) * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
