"""Seconds and peak memory of one 512 -> 1024 enhancement (20 evaluations, default preset, default tiling) on this
CPU, against a MONAI DiffusionModelUNet configured like the published model, timed in the same run.

    python bench/enhance_speed.py [--model PATH] [--threads 2] [--steps 10] [--tile 512] [--skip-paper]

Peak memory: the process's peak resident set size while enhancing (includes the Python/torch runtime), measured
in a child process so the paper network cannot inflate it. The published sampler = 2000 evaluations of the
paper network at 1024² (its per-evaluation time is measured here, once, after a warm-up at 256²).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS  # noqa: E402  (import-free module)


def _ours(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from dxr_core.data import make_hq, degrade
    from dxr_core.diffusion import load_enhancer

    enh = load_enhancer(args.model)
    lq = degrade(make_hq(1024, seed=123), 2, blur_sigma=1.2)
    enh.enhance(lq[:64, :64], scale=2, steps=2, tile=args.tile)  # warm-up (oneDNN kernels)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = enh.enhance(lq, scale=2, sampler=DEFAULT_SAMPLER, steps=args.steps, seed=0, tile=args.tile)
    dt = time.perf_counter() - t0
    assert out.shape == (1024, 1024)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from dxr_core.models import count_parameters

    return {"seconds": dt, "per_eval": dt / args.steps, "peak_rss_mb": peak, "rss_before_mb": rss0,
            "preset": enh.meta.get("preset", "?"), "params": count_parameters(enh.model),
            "finite": bool(np.isfinite(out).all())}


def _paper(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from dxr_core.models import build_model, count_parameters

    net = build_model("paper").eval()
    with torch.inference_mode():
        net(torch.randn(1, 2, 256, 256), torch.tensor([500.0]))
        x = torch.randn(1, 2, 1024, 1024)
        t0 = time.perf_counter()
        net(x, torch.tensor([500.0]))
        dt = time.perf_counter() - t0
    return {"per_eval": dt, "params": count_parameters(net),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--child", choices=["ours", "paper"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_ours(args) if args.child == "ours" else _paper(args.threads)))
        return 0
    base = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads), "--steps",
            str(args.steps), "--tile", str(args.tile)] + (["--model", args.model] if args.model else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    load = os.getloadavg()[0]
    ours = json.loads(subprocess.run(base + ["--child", "ours"], check=True, capture_output=True, text=True,
                                     env=env).stdout.strip().splitlines()[-1])
    print(f"cpu: {os.cpu_count()} cores, torch threads {args.threads}, load average {load:.1f} at start")
    print(f"ours   preset={ours['preset']} params={ours['params'] / 1e6:.2f}M 512->1024 "
          f"{DEFAULT_SAMPLER} {args.steps} evals "
          f"tile={args.tile}: {ours['seconds']:.1f} s ({ours['per_eval']:.2f} s/eval), peak RSS "
          f"{ours['peak_rss_mb']:.0f} MB -> goal <=30 s: {'MET' if ours['seconds'] <= 30 else 'NOT MET'}, "
          f"<=4 GB: {'MET' if ours['peak_rss_mb'] <= 4096 else 'NOT MET'}")
    if args.skip_paper:
        return 0
    paper = json.loads(subprocess.run(base + ["--child", "paper"], check=True, capture_output=True, text=True,
                                      env=env).stdout.strip().splitlines()[-1])
    published = paper["per_eval"] * 2000
    print(f"paper  MONAI DiffusionModelUNet base16 x(1,2,4,8,16,32,32,32) attn@deepest params="
          f"{paper['params'] / 1e6:.1f}M at 1024^2: {paper['per_eval']:.2f} s/eval, peak RSS "
          f"{paper['peak_rss_mb']:.0f} MB; published sampler 2000 evals = {published:.0f} s "
          f"({published / 3600:.2f} h)")
    print(f"ratio  per-evaluation {paper['per_eval'] / ours['per_eval']:.1f}x faster; whole enhancement "
          f"{published / ours['seconds']:.0f}x faster than the published sampler on this CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
