"""DRR speed benchmark: our in-process render vs plastimatch exact (Siddon) on the same CT, in the same run.

CT: synthetic chest-like HU volume, 512x512x300 at 0.7x0.7x1.25 mm (``--quick``: 256x256x150 at 1.4x1.4x2.5 mm),
PA, SAD 1000, SID 1500, 512x512 detector (quick: 256x256). Ours: ``render_drr`` with the volume already in memory,
warm (one untimed call first), best of ``--repeats``. Plastimatch: ``plastimatch drr -i exact --hu-conversion none``
on an MHA of the attenuation volume; its compute time = wall time (best of 3) minus the wall time (best of 3) of the
same command with a 1x1 detector (= loading/writing only). Peak memory of a 2000x2000 render is measured in a fresh
subprocess as its ``VmHWM`` (peak resident set of its own address space, whole process incl. the CT and
Python/torch). The steps the default preset adds (scatter + grid, CsI detector, multiscale processing; see
docs/drr_physics.md) are timed one by one at 512x512 on the pa-chest preset, and the CT clean-up once. Not
``ru_maxrss``: on Linux that survives fork + exec, so a child would report the benchmark parent's larger RSS (it
did: 2.6 GB reported for a 1.1 GB child).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_ct(shape_zyx, spacing_xyz):
    from dxr_core.volume import Volume

    z, y, x = shape_zyx
    sx, sy, sz = spacing_xyz
    zz = (np.arange(z, dtype=np.float32) - (z - 1) / 2) * sz
    yy = (np.arange(y, dtype=np.float32) - (y - 1) / 2) * sy
    xx = (np.arange(x, dtype=np.float32) - (x - 1) / 2) * sx
    Y, X = np.meshgrid(yy, xx, indexing="ij")
    body = (X / 160) ** 2 + (Y / 110) ** 2 < 1
    lungs = ((np.abs(X) - 75) / 55) ** 2 + ((Y + 5) / 80) ** 2 < 1
    spine = (X / 18) ** 2 + ((Y - 75) / 18) ** 2 < 1
    sl = np.where(body, 40.0, -1000.0).astype(np.float32)
    sl[lungs & body] = -850.0
    sl[spine] = 700.0
    vol = np.empty((z, y, x), dtype=np.float32)
    rng = np.random.default_rng(0)
    for k in range(z):
        ribs = np.abs(np.sin(zz[k] / 12.0)) > 0.93
        v = sl.copy()
        if ribs:
            ring = np.abs(np.sqrt((X / 150) ** 2 + (Y / 100) ** 2) - 0.95) < 0.03
            v[ring] = 900.0
        vol[k] = v + rng.normal(0, 10, size=v.shape).astype(np.float32)
    return Volume(vol, spacing_xyz, (-(x - 1) / 2 * sx, -(y - 1) / 2 * sy, -(z - 1) / 2 * sz))


def run_plastimatch(mha, det, spacing, out_dir, iso):
    rows, cols = det
    cmd = ["plastimatch", "drr", "-i", "exact", "--hu-conversion", "none", "-t", "pfm",
           "-r", f"{cols} {rows}", "-z", f"{cols * spacing} {rows * spacing}", "--sad", "1000", "--sid", "1500",
           "-o", " ".join(str(v) for v in iso), "--nrm", "0 1 0", "--vup", "0 0 1",
           "-O", os.path.join(out_dir, f"p{rows}_"), mha]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def peak_memory_child(shape, spacing, det):
    code = f"""
import resource, sys, time
sys.path.insert(0, {os.getcwd()!r})
from bench.drr_speed import make_ct
from dxr_core.drr import make_geometry, render_drr
v = make_ct({shape!r}, {spacing!r})
g = make_geometry(v, 'pa', size={det!r})
t = time.perf_counter(); d = render_drr(v, g); dt = time.perf_counter() - t
try:  # peak RSS of this process's own address space (ru_maxrss would include the forking parent's RSS)
    hwm = float(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024.0
except (OSError, IndexError):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(dt, hwm)
"""
    r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    dt, mb = r.stdout.strip().splitlines()[-1].split()
    return float(dt), float(mb)


def acquisition_step_costs(v, repeats: int = 3) -> str:
    """Cost of each opt-in acquisition step (dxr_core.drr.acquisition) at 512^2, best of ``repeats``: scatter
    (SKS on a 4 mm grid), detector (focal spot + Poisson + CsI MTF + electronic noise), processing (multiscale
    pyramid + tone curve), on the pa-chest preset's physics and the noise-free primary of this CT."""
    from dxr_core.drr import render_drr
    from dxr_core.drr.acquisition import Acquisition, apply_acquisition
    from dxr_core.drr.presets import preset_acquisition, preset_geometry, preset_physics

    g = preset_geometry(v, "pa-chest", size=512)
    phys = preset_physics("pa-chest")
    full = preset_acquisition("pa-chest")
    primary = render_drr(v, g, phys, acquisition=full).primary  # warm (spectra, beam quality, FFT plans)
    steps = {"scatter": Acquisition(scatter=full.scatter, grid=full.grid),
             "detector": Acquisition(detector=full.detector),
             "processing": Acquisition(processing=full.processing)}
    key = {"scatter": "scatter_s", "detector": "detector_s", "processing": "processing_s"}
    parts = []
    for name, acq in steps.items():
        best = min(apply_acquisition(acq, phys, g, primary, seed=0)["timings"][key[name]] for _ in range(repeats))
        parts.append(f"{name} {best * 1e3:.1f} ms")
    best_all = min(sum(apply_acquisition(full, phys, g, primary, seed=0)["timings"].values()) for _ in range(repeats))
    return (f"drr_speed: acquisition steps at 512x512 (pa-chest preset): {' | '.join(parts)} | "
            f"all three {best_all * 1e3:.1f} ms (on top of the raw render)")


def cleanup_cost(v) -> str:
    """Cost of the CT clean-up that every preset switches on (couch, field of view, scan ends, contrast), once."""
    import warnings

    from dxr_core.drr.cleanup import cleanup_ct

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleanup_ct(v, "table,fov,taper,contrast")
    return (f"drr_speed: CT clean-up (table,fov,taper,contrast) of this {v.array.shape[::-1]} CT "
            f"{time.perf_counter() - t:.2f} s (once per CT; a dataset reuses it for every view)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256x256x150 CT, 256^2 detector, no 2000^2 run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.getcwd())
    import torch

    from dxr_core.drr import Physics, hu_to_mu, make_geometry, render_drr

    if args.quick:
        shape, spacing, det = (150, 256, 256), (1.4, 1.4, 2.5), (256, 256)
    else:
        shape, spacing, det = (300, 512, 512), (0.7, 0.7, 1.25), (512, 512)
    v = make_ct(shape, spacing)
    g = make_geometry(v, "pa", size=det, sad_mm=1000, sid_mm=1500)
    render_drr(v, g, device=args.device)  # warm (kernel build / load, caches)
    ours = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        render_drr(v, g, device=args.device)
        if args.device != "cpu":
            torch.cuda.synchronize()
        ours.append(time.perf_counter() - t)
    t_ours = min(ours)
    poly = []
    for _ in range(2):
        t = time.perf_counter()
        render_drr(v, g, Physics(mode="poly"), device=args.device)
        poly.append(time.perf_counter() - t)
    line = f"drr_speed: ours {det[0]}x{det[1]} {t_ours:.2f} s"
    ratio = None
    if shutil.which("plastimatch"):
        import SimpleITK as sitk

        with tempfile.TemporaryDirectory() as tmp:
            mha = os.path.join(tmp, "mu.mha")
            sitk.WriteImage(v.with_array(hu_to_mu(v.array, 60.0)).to_sitk(), mha)
            iso = v.center_lps
            sp = g.pixel_spacing_mm[0]
            full = min(run_plastimatch(mha, det, sp, tmp, iso) for _ in range(3))
            load = min(run_plastimatch(mha, (1, 1), sp * det[0], tmp, iso) for _ in range(3))
            comp = max(full - load, 1e-6)
            ratio = comp / t_ours
            line += f" | plastimatch exact compute {comp:.2f} s | speedup {ratio:.1f}x (goal >= 4x)"
    else:
        line += " | plastimatch not on PATH: no comparison"
    print(line)
    print(f"drr_speed: poly (120 kVp, 2 basis channels) {det[0]}x{det[1]} {min(poly):.2f} s; "
          f"threads {torch.get_num_threads()}; device {args.device}")
    print(acquisition_step_costs(v, args.repeats))
    print(cleanup_cost(v))
    if not args.quick:
        dt, mb = peak_memory_child(shape, spacing, (2000, 2000))
        print(f"drr_speed: ours 2000x2000 {dt:.2f} s (cold process, includes kernel load) "
              f"| peak RSS {mb / 1024:.2f} GB "
              f"(VmHWM of a fresh subprocess, whole process incl. the 0.3 GB CT) (goal <= 3 GB)")
    print(json.dumps({"ours_s": t_ours, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
