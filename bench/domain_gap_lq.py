"""Domain gap of LQ syntheses: real radiographs vs bicubic / area / high_order / acquisition LQ vs phantom DRRs.

    .venv/bin/python bench/domain_gap_lq.py --real CXR_DIR --metadata CXR_DIR/metadata.csv --out /tmp/dgap \
        [--drr DRR_DIR]

The real radiographs are split by patient (``patient_split``, 50/50, seed 0) into A (the reference) and B. From
B's images (each put on a 256 x 256 grid: central square, antialiased) every LQ method makes a 128 x 128 image
(``dxr_core.degrade``, per-image seeds). Phantom DRR pairs (``dxr_core.phantom.drr_pair``, 256 HQ / 128 LQ,
seeds 0..N-1) are cached in OUT/phantom. All sets are compared on the 128 grid (the LQ grid) with
``dxr_core.metrics.domain.domain_gap``: first against real A (how real does each set look?), then against the
phantom DRR LQ set (how DRR-like is each synthetic LQ?). Against real A, the real-B row is the same-domain floor.
Prints a table and writes OUT/domain_gap_lq.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="folder of real radiographs")
    ap.add_argument("--metadata", required=True, help="CSV with patientid and filename columns")
    ap.add_argument("--out", required=True, help="work folder (split manifest, cached phantom DRRs, JSON)")
    ap.add_argument("--phantom", type=int, default=16, help="number of phantom DRR pairs (default 16)")
    ap.add_argument("--drr", default=None, help="optional folder of DRRs of real CTs (e.g. `dxr drr --size 256`), "
                                                 "compared as one more set (spectrum and histogram; C2ST needs 4+)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from dxr_core.data.pairs import read_image, write_image
    from dxr_core.data.radiographs import load_radiograph, patient_split
    from dxr_core.degrade import degrade
    from dxr_core.degrade.api import image_seed
    from dxr_core.metrics.domain import domain_gap, prepare

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = patient_split(args.metadata, out / "split.csv", image_dir=args.real, fractions=(0.5, 0.5, 0.0),
                         seed=args.seed)
    real = {"train": [], "val": []}
    for r in tqdm(rows, desc="real", unit="image"):
        real[r["split"]].append((r["file"], prepare(load_radiograph(Path(args.real) / r["file"])[0], 256)))
    a = [im for _, im in real["train"]]
    b = real["val"]
    print(f"real: {len(a)} reference images (A), {len(b)} for LQ synthesis (B); patients disjoint", flush=True)
    sets: dict[str, list[np.ndarray]] = {"real B": [prepare(im, 128) for _, im in b]}
    timings = {}
    for m in ("bicubic", "area", "high_order", "acquisition"):
        t0 = time.perf_counter()
        sets[f"{m} LQ of B"] = [degrade(im, m, seed=image_seed(args.seed, name)) for name, im in b]
        timings[m] = (time.perf_counter() - t0) / len(b)
    from dxr_core.phantom import drr_pair

    lq_d, hq_d = out / "phantom" / "lq", out / "phantom" / "hq"
    for s in tqdm(range(args.phantom), desc="phantom DRR pairs", unit="pair"):
        if not ((lq_d / f"{s:04d}.png").is_file() and (hq_d / f"{s:04d}.png").is_file()):
            lq, hq = drr_pair(s, 256)
            write_image(lq, lq_d / f"{s:04d}.png")
            write_image(hq, hq_d / f"{s:04d}.png")
    sets["phantom DRR HQ"] = [prepare(read_image(hq_d / f"{s:04d}.png"), 128) for s in range(args.phantom)]
    sets["phantom DRR LQ"] = [read_image(lq_d / f"{s:04d}.png") for s in range(args.phantom)]

    if args.drr:
        from dxr_core.data.radiographs import list_radiographs

        sets["real-CT DRR"] = [prepare(load_radiograph(f)[0], 128) for f in list_radiographs(args.drr)]
    ref_a = [prepare(im, 128) for im in a]
    results: dict = {"n_real_a": len(a), "n_real_b": len(b), "grid": 128, "seconds_per_image": timings,
                     "vs_real": {}, "vs_phantom_lq": {}}
    for name, imgs in sets.items():
        results["vs_real"][name] = _summary(domain_gap(ref_a, imgs, size=128, seed=args.seed))
    for name, imgs in sets.items():
        if name != "phantom DRR LQ":
            results["vs_phantom_lq"][name] = _summary(domain_gap(sets["phantom DRR LQ"], imgs, size=128,
                                                                 seed=args.seed))
    for key, title in (("vs_real", f"against real A ({len(a)} images)"),
                       ("vs_phantom_lq", f"against phantom DRR LQ ({args.phantom} images)")):
        print(f"\n{title}: spectrum RMS log10 | histogram W1 | C2ST accuracy (p, n_test)")
        for name, r in results[key].items():
            print(f"  {name:<22} {r['spectrum']:.3f}   {r['histogram']:.4f}   {r['c2st_accuracy']:.3f} "
                  f"(p {r['c2st_p']:.2g}, {r['c2st_n_test']})")
    (out / "domain_gap_lq.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out / 'domain_gap_lq.json'}")
    return 0


def _summary(r: dict) -> dict:
    c = r["c2st"] or {}
    return {"n": r["n_b"], "spectrum": r["spectrum"]["distance"], "high_freq": r["spectrum"]["high_freq_difference"],
            "histogram": r["histogram"]["distance"],
            "histogram_regions": {k: v["wasserstein"] for k, v in r["histogram"]["regions"].items()},
            "c2st_accuracy": c.get("accuracy", float("nan")), "c2st_p": c.get("p_value", float("nan")),
            "c2st_n_test": c.get("n_test", 0)}


if __name__ == "__main__":
    sys.exit(main())
