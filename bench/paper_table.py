"""The paper's Table 1, ours: held-out real radiographs degraded by each LQ synthesis, restored by each DDPM-HQ model,
beside bicubic upsampling; PSNR / SSIM / MS-SSIM on the whole image and in the lung fields, added noise and
invented structure.

    .venv/bin/python bench/paper_table.py --hq CXR_DIR --manifest split.csv --split test \
        --lq area=area --lq munit=munit:model=MUNIT/model.pt --lq ddpm=ddpm:model=DDPM_LQ/model.pt \
        --model shipped=shipped --model mix=RUN/model.pt [--hq-size 512] [--steps N] [--out /tmp/table]

``--lq NAME=METHOD[:KEY=VALUE,...]``: an LQ test set (``dxr_core.degrade`` method and options, seed = image index;
``match_tone=true``: the LQ mapped onto its HQ's grey levels, as ``dxr make-pairs --match-tone``).
``--model NAME=PATH[:temperature=T]`` (``shipped`` = the shipped weights): a DDPM-HQ enhancer, at its own
initial-noise temperature unless one is given (the same checkpoint may appear twice under two names). Every
held-out HQ radiograph (central square at ``--hq-size``) is degraded 2x by each LQ method and enhanced back 2x by
each model (default sampler, ``--steps``, default: each model's own; seed 0); bicubic upsampling of the same LQ is
the first row of each block. Measures (``dxr_core.metrics.restoration``): PSNR / SSIM / MS-SSIM (data range 1) of the
whole image and inside the lung
fields (no masks exist for these radiographs: the dark 30 % of the central 80 % of the reference stands in),
``noise`` (high-pass spread in the reference's flat regions, ratio to the reference's; goal <= 1.1) and
``invented`` (high-pass energy of output - reference there; goal: no more than bicubic's). ``wins``: images where
the model beats bicubic by >= 0.5 dB with SSIM >= bicubic's. The paper's anchors (its Table 1): MUNIT-LQ test,
bicubic-trained 20.08 / 0.83 -> MUNIT-trained 27.50 / 0.92; DDPM-LQ test 19.85 / 0.78 -> 22.21 / 0.78.
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

KEYS = ("psnr", "ssim", "ms_ssim", "psnr_lung", "ssim_lung", "ms_ssim_lung", "noise", "invented")


def _named(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value.strip()


def lq_spec(value: str) -> tuple[str, dict]:
    """``METHOD[:KEY=VALUE,...]`` -> (method, options); values are JSON where they parse."""
    method, _, rest = value.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        try:
            options[k.strip()] = json.loads(v)
        except ValueError:
            options[k.strip()] = v.strip()
    return method.strip(), options


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hq", required=True, help="folder of real radiographs")
    ap.add_argument("--manifest", required=True, help="patient-level split CSV (never a training patient)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lq", type=_named, action="append", required=True, metavar="NAME=METHOD[:K=V,...]")
    ap.add_argument("--model", type=_named, action="append", required=True, metavar="NAME=PATH[:temperature=T]")
    ap.add_argument("--hq-size", type=int, default=512, help="HQ side (LQ = half; default 512 -> 256)")
    ap.add_argument("--steps", type=int, default=None, help="sampler evaluations (default: each model's own)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/paper_table")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from dxr_core.data.radiographs import RadiographFolder
    from dxr_core.degrade import degrade
    from dxr_core.degrade.pairs import central_square
    from dxr_core.degrade.tone import match_tone, tone_quantiles
    from dxr_core.diffusion import load_enhancer
    from dxr_core.diffusion.enhancer import bicubic_upsample
    from dxr_core.errors import OptionError
    from dxr_core.metrics.restoration import flat_mask, lung_proxy_mask, restoration_measures

    ds = RadiographFolder(args.hq, manifest=args.manifest, split=args.split.split(","))
    n = len(ds) if not args.limit else min(args.limit, len(ds))
    hqs = [central_square(ds.load(i), args.hq_size) for i in range(n)]
    models, temps = {}, {}
    for name, spec in args.model:
        path, options = lq_spec(spec)
        if set(options) - {"temperature"}:
            ap.error(f"--model {name}: unknown option(s) {sorted(set(options) - {'temperature'})}; only temperature")
        models[name] = load_enhancer(None if path == "shipped" else path)
        try:  # checked before any work
            temps[name] = models[name].resolve_temperature(options.get("temperature"))
        except OptionError as exc:
            ap.error(f"--model {name}: {exc}")
    t0 = time.perf_counter()
    table: dict = {}
    for lq_name, spec in args.lq:
        method, options = lq_spec(spec)
        rows: dict = {"bicubic": []}
        rows.update({m: [] for m in models})
        tone_matched = bool(options.get("match_tone", False))
        degrade_options = {k: v for k, v in options.items() if k != "match_tone"}
        for i, hq in enumerate(hqs):
            lq = degrade(hq, method, seed=i, **degrade_options)
            if tone_matched:  # as `dxr make-pairs --match-tone`: the LQ at the HQ's tone (detail and texture only)
                lq = match_tone(lq, tone_quantiles(hq))
            flat, lungs = flat_mask(hq), lung_proxy_mask(hq)
            bic = bicubic_upsample(lq, hq.shape)
            rows["bicubic"].append(restoration_measures(np.clip(bic, 0, 1), hq, lungs, flat))
            for m, enh in models.items():
                out = enh.enhance(lq, scale=2, steps=args.steps, seed=0, out_size=hq.shape,  # None: the model's
                                  temperature=temps[m])
                rows[m].append(restoration_measures(out, hq, lungs, flat))
        table[lq_name] = {"method": method, "options": options, "rows": rows}
        print(f"\nLQ test set {lq_name} ({method}{' ' + json.dumps(options) if options else ''}): {n} held-out "
              f"radiographs of split {args.split}, {args.hq_size}^2 HQ, evaluations: "
              + ", ".join(f"{m} {enh.evaluations(None, args.steps)} (temperature {temps[m]:g})"
                          for m, enh in models.items()))
        print("| restored by | PSNR | SSIM | MS-SSIM | PSNR lungs | SSIM lungs | MS-SSIM lungs | noise | invented "
              "| wins vs bicubic |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        bic_rows = rows["bicubic"]
        for name, rs in rows.items():
            mean = {k: float(np.mean([r[k] for r in rs])) for k in KEYS}
            wins = "-"
            if name != "bicubic":
                won = sum(1 for r, b in zip(rs, bic_rows) if r["psnr"] >= b["psnr"] + 0.5 and r["ssim"] >= b["ssim"])
                wins = f"{won}/{len(rs)}"
            print(f"| {name} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['ms_ssim']:.4f} | "
                  f"{mean['psnr_lung']:.2f} | {mean['ssim_lung']:.4f} | {mean['ms_ssim_lung']:.4f} | "
                  f"{mean['noise']:.2f}x | {mean['invented']:.2e} | {wins} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_table.json").write_text(json.dumps(table, indent=1, default=float))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; JSON: {out / 'paper_table.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
