"""PSNR / SSIM against the HQ truth vs number of network evaluations, for every sampler, one trained model.

    python bench/sampler_quality.py [--model PATH] [--images 3] [--size 256] [--seed 0]
    python bench/sampler_quality.py --pairs DIR [--crop 256]   # held-out LQ/HQ pairs on disk (e.g. phantom DRRs)

Held-out data: synthetic pairs from dxr_core.data.make_pair with seeds never used for training, or, with --pairs,
the first --images pairs of DIR/lq + DIR/hq (e.g. written by dxr_core.data.pairs_from_phantom with a seed the model
never saw), each cut to a --crop x --crop HQ window (and the matching LQ window) in the right lung field of a PA
view (centre at 45 % of the height and 30 % of the width) so that the 1000-step chain stays affordable on a CPU.
All samplers start from the same noise (same seeds). Prints one line per setting, the bicubic baseline, and the goal
line: best setting with <= 20 evaluations vs the full ancestral chain (goal: within 0.3 dB, or better).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dxr_core.data import make_pair, pair_window, read_image  # noqa: E402
from dxr_core.diffusion import load_enhancer, upsample_condition  # noqa: E402
from dxr_core.metrics import psnr, ssim  # noqa: E402

SETTINGS = [("ddpm", None), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp", 5), ("dpmpp", 10), ("dpmpp", 20)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="enhancer checkpoint (default: shipped weights)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="HQ size of the held-out images (the shipped model saw 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", default=None, metavar="DIR", help="held-out pairs DIR/lq, DIR/hq instead of synthetic")
    ap.add_argument("--crop", type=int, default=256, help="with --pairs: HQ window size (even)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DXR_THREADS", "1")))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    enh = load_enhancer(args.model)
    if args.pairs:
        names = sorted(f.name for f in (Path(args.pairs) / "hq").iterdir())[: args.images]
        pairs = [pair_window(read_image(Path(args.pairs) / "lq" / n), read_image(Path(args.pairs) / "hq" / n),
                             args.crop) for n in names]
        args.size = args.crop
    else:
        pairs = [make_pair(args.size, 2, seed=800_000 + k) for k in range(args.images)]
    lq = torch.stack([torch.from_numpy(p[0])[None] for p in pairs])
    hq = [p[1] for p in pairs]
    seeds = [args.seed + k for k in range(args.images)]
    bic = ((upsample_condition(lq * 2 - 1, hq[0].shape) + 1) / 2).numpy()[:, 0]
    b_psnr = float(np.mean([psnr(b, h) for b, h in zip(bic, hq)]))
    b_ssim = float(np.mean([ssim(b, h) for b, h in zip(bic, hq)]))
    T = enh.schedule.T
    data = f"pairs={args.pairs} crop={args.crop}" if args.pairs else "synthetic"
    print(f"model={args.model or 'shipped'} data={data} T={T} prediction={enh.diffusion.prediction} "
          f"images={args.images} size={args.size} (LQ {args.size // 2}) threads={args.threads}")
    print(f"bicubic            nfe=   0 psnr={b_psnr:6.2f} ssim={b_ssim:.4f}")
    rows = []
    for sampler, steps in SETTINGS:
        steps = T if steps is None else steps
        t0 = time.perf_counter()
        out = enh.enhance_tensor(lq, scale=2, sampler=sampler, steps=steps, seed=seeds, tile=None)[:, 0].numpy()
        dt = time.perf_counter() - t0
        p = float(np.mean([psnr(o, h) for o, h in zip(out, hq)]))
        s = float(np.mean([ssim(o, h) for o, h in zip(out, hq)]))
        nfe = enh.evaluations(sampler, steps)
        rows.append((sampler, nfe, p, s))
        ref = rows[0][2]
        print(f"{sampler:<6} steps={steps:<5d} nfe={nfe:4d} psnr={p:6.2f} ssim={s:.4f} "
              f"dpsnr_vs_ddpm={p - ref:+.2f} seconds={dt:.1f}", flush=True)
    ddpm = rows[0][2]
    fast = [r for r in rows[1:] if r[1] <= 20]
    best = max(fast, key=lambda r: r[2])
    worst = min(fast, key=lambda r: r[2])
    ok = best[2] >= ddpm - 0.3
    print(f"goal: best <=20-NFE setting {best[0]}-{best[1]} psnr {best[2]:.2f} vs full ancestral ddpm-{T} "
          f"{ddpm:.2f} (diff {best[2] - ddpm:+.2f} dB; worst <=20-NFE {worst[0]}-{worst[1]} {worst[2] - ddpm:+.2f} dB)"
          f" -> {'MET' if ok else 'NOT MET'}; speed-up {T / best[1]:.0f}x fewer evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
