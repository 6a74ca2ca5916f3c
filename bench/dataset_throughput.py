"""`dxr dataset` throughput on this machine: labelled, enhanced 1024² images per hour end to end, the share of time
in each stage, and the same pipeline without enhancement (the peer, measured in the same run).

    python bench/dataset_throughput.py [--images 8] [--size 512] [--steps 10] [--threads 2]

Two phantom CTs (0.8 mm in-plane, 2.5 mm slices: the size of a clinical chest CT) are written to a temporary folder;
``dxr_core.dataset.build`` makes ``--images`` images (nodules, 512² DRR, DDPM-HQ 2x with ddim ``--steps``) and then
the same images without enhancement. The issue's goal: >= 250 enhanced 1024² images per hour on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from dxr_core.diffusion.defaults import DEFAULT_STEPS  # noqa: E402  (import-free module)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)  # 4 per CT: the dataset default
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(args.threads)
    from dxr_core.dataset import DatasetConfig, build
    from dxr_core.phantom import make_chest_phantom

    work = Path(tempfile.mkdtemp(prefix="dxr-dataset-bench-"))
    cts = work / "cts"
    cts.mkdir()
    for s in (0, 1):
        ct = make_chest_phantom(seed=s, spacing_mm=(0.8, 0.8, 2.5))
        sitk.WriteImage(ct.to_sitk(), str(cts / f"ct{s}.nrrd"), True)
    per_ct = max(1, args.images // 2)
    results = {}
    for enhance in (True, False):
        cfg = DatasetConfig.load(None, {"images_per_ct": per_ct, "size": args.size, "steps": args.steps,
                                        "enhance": enhance, "split": [1.0, 0.0, 0.0]})
        t0 = time.perf_counter()
        res = build(cts, work / f"out_{enhance}", cfg, progress=False)
        dt = time.perf_counter() - t0
        results[enhance] = (res, dt)
    (res_e, dt_e), (res_d, dt_d) = results[True], results[False]
    n = res_e["done"]
    rate_e, rate_d = 3600 * n / dt_e, 3600 * res_d["done"] / dt_d
    share = " | ".join(f"{k} {100 * v:.0f}%" for k, v in res_e["share"].items())
    side = args.size * 2
    print(f"dataset_throughput: enhanced {side}^2 (ddim {args.steps}, {args.threads} threads): "
          f"{rate_e:.0f} images/hour "
          f"({n} images in {dt_e:.0f} s, CT read included) | stages: {share}")
    print(f"dataset_throughput: without enhancement ({args.size}^2 DRR + labels): {rate_d:.0f} images/hour | ratio "
          f"{rate_d / rate_e:.1f}x")
    print(f"dataset_throughput: goal >= 250 enhanced images/hour: {'MET' if rate_e >= 250 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
