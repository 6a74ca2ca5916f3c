"""Cost of a nodule beyond the base DRR: delta re-trace of the nodule's box vs a full re-render.

Prints e.g. ``nodule_speed: 12.3 ms per nodule beyond the base DRR at 512x512 (goal <= 50 ms); full re-render
850 ms (69x)``. The time per nodule includes the 3-D partial-volume insertion, the box re-trace + physics, the
analytic projected mask and the visibility measurement.
Usage: python bench/nodule_speed.py [--n 8] [--spacing 1.5] [--size 512]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--spacing", type=float, default=1.5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from dxr_core.drr import Physics, make_geometry, render_drr
    from dxr_core.nodules import LungDistance, add_nodules_to_drr, random_nodules
    from dxr_core.phantom import make_chest_phantom

    t = time.perf_counter()
    ct = make_chest_phantom(a.seed, spacing_mm=a.spacing)
    t_ph = time.perf_counter() - t
    geo = make_geometry(ct, view="pa", size=(a.size, a.size))
    phys = Physics(mode="poly", photons_per_pixel=1e5)
    t = time.perf_counter()
    base = render_drr(ct, geo, phys, seed=1)
    t_full = time.perf_counter() - t
    lung = LungDistance(ct)
    nods = random_nodules(ct, a.n, seed=a.seed, diameter_range=(5, 30), lung=lung)
    add_nodules_to_drr(base, ct, nods[:1], seed=1)  # warm-up (imports, thread pools)
    t = time.perf_counter()
    _, _, labels = add_nodules_to_drr(base, ct, nods, seed=1)
    per = (time.perf_counter() - t) / len(nods) * 1000.0
    x, y, z = ct.shape_xyz
    print(f"phantom {x}x{y}x{z} voxels ({a.spacing:g} mm) in {t_ph:.1f} s; base DRR {a.size}x{a.size} (poly) "
          f"{t_full * 1000:.0f} ms; {len(nods)} nodules, diameters "
          f"{', '.join(f'{n.diameter_mm:.0f}' for n in nods)} mm; per-nodule ms "
          + ", ".join(f"{lab['time_ms']:.0f}" for lab in labels))
    for n, lab in zip(nods, labels):
        print(f"  {n.kind:10s} {n.shape:10s} {n.diameter_mm:5.1f} mm: "
              + ", ".join(f"{k} {v:.1f}" for k, v in lab["time_split_ms"].items()))
    split = {k: np.mean([lab["time_split_ms"][k] for lab in labels]) for k in labels[0]["time_split_ms"]}
    print("mean split (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    print(f"nodule_speed: {per:.1f} ms per nodule beyond the base DRR at {a.size}x{a.size} (goal <= 50 ms); "
          f"full re-render {t_full * 1000:.0f} ms ({t_full * 1000 / per:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
