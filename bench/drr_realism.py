"""Realism of DRRs against real radiographs: raw DRR (--preset none) vs the default DRR (pa-chest + CT clean-up).

    .venv/bin/python bench/drr_realism.py --real CXR_DIR --ct CT1 [--ct CT2 ...] [--phantoms 2] \
        --out /tmp/realism [--png docs/drr_realism.png]

For every CT (DICOM folders or volume files given with ``--ct``) and every phantom (``dxr_core.phantom``, seeds
0..N-1, written as NRRD first) three PA DRRs are rendered through ``dxr drr`` itself (so the bench measures what a
user gets), all at ``--size`` pixels (default 512):

* ``raw``       - ``dxr drr --ct CT --size 512 --preset none`` (fixed log window, no scatter, detector or clean-up);
* ``preset``    - ``--preset pa-chest --cleanup none`` (acquisition physics only: geometry, scatter + grid, CsI
  detector with quantum noise, multiscale processing);
* ``realistic`` - ``dxr drr``'s default, ``--preset pa-chest`` (acquisition physics + the CT clean-up, which the
  preset switches on).

Each set is compared with the real radiographs of ``--real`` by ``dxr_core.metrics.domain`` on a common 256 x 256
grid (central square, area-averaged): (a) the radially averaged power spectrum of the central region (75 % of the
side: lungs and mediastinum), RMS difference of the mean log10 spectra in decades; (b) the regional intensity
histograms (central 80 %; dark < 30th percentile = lung fields, 30th..80th = mediastinum / soft tissue, > 80th =
bone / dense mediastinum), Wasserstein-1 distance per region in grey levels [0, 1], and their mean. The bench
prints every distance and the ratio raw / realistic (> 1: the realistic DRR is closer to real radiographs), writes
OUT/drr_realism.json and, with ``--png``, a side-by-side picture (real | raw DRR | realistic DRR) of the first CTs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "raw": ["--preset", "none"],
    "preset": ["--preset", "pa-chest", "--cleanup", "none"],
    "realistic": ["--preset", "pa-chest"],
}


def render(ct: Path, out: Path, stem: str, size: int, variant: str) -> np.ndarray:
    from dxr_core.cli import main
    from dxr_core.io import read_radiograph

    d = out / variant
    rc = main(["drr", "--ct", str(ct), "--out", str(d), "--stem", stem, "--size", str(size),
               "--formats", "nrrd,json"] + VARIANTS[variant])
    if rc != 0:
        raise SystemExit(f"dxr drr failed for {ct} ({variant})")
    return np.asarray(read_radiograph(d / f"{stem}.nrrd")[0], dtype=np.float32)


def real_set(folder: Path, limit: int | None) -> tuple[list[np.ndarray], list[Path]]:
    from dxr_core.data.radiographs import list_radiographs, load_radiograph
    from dxr_core.metrics.domain import prepare

    files = list_radiographs(folder)
    if limit:
        files = files[:limit]
    imgs = []
    for f in files:
        img = load_radiograph(f)[0]
        imgs.append(prepare(img, 256))
    return imgs, files


def compare(real: list[np.ndarray], sets: dict[str, list[np.ndarray]]) -> dict:
    from dxr_core.metrics.domain import histogram_distance, prepare, spectrum_distance

    res = {}
    for name, imgs in sets.items():
        if not imgs:
            continue
        p = [prepare(im, 256) for im in imgs]
        s = spectrum_distance(real, p, prepared=True)
        h = histogram_distance(real, p, prepared=True)
        res[name] = {"n": len(p), "spectrum": s["distance"], "high_freq_difference": s["high_freq_difference"],
                     "histogram": h["distance"],
                     "regions": {r: h["regions"][r]["wasserstein"] for r in h["regions"]},
                     "region_means": {r: [h["regions"][r]["mean_a"], h["regions"][r]["mean_b"]]
                                      for r in h["regions"]}}
    return res


def table(title: str, res: dict) -> str:
    head = (f"  {'set':<10} {'n':>3} {'spectrum':>9} {'hist(mean)':>10} {'lung':>7} {'mediast':>7} "
            f"{'bone':>7}   mean grey (real vs set): lung / mediastinum / bone")
    lines = [title, head]
    for name, r in res.items():
        m = r["region_means"]
        lines.append(f"  {name:<10} {r['n']:>3} {r['spectrum']:>9.4f} {r['histogram']:>10.4f} "
                     f"{r['regions']['dark']:>7.4f} {r['regions']['middle']:>7.4f} {r['regions']['bright']:>7.4f}"
                     f"   {m['dark'][0]:.2f}/{m['dark'][1]:.2f}  {m['middle'][0]:.2f}/{m['middle'][1]:.2f}  "
                     f"{m['bright'][0]:.2f}/{m['bright'][1]:.2f}")
    if "raw" in res and "realistic" in res:
        a, b = res["raw"], res["realistic"]
        lines.append(f"  ratio raw/realistic: spectrum {a['spectrum'] / max(b['spectrum'], 1e-9):.2f}x, "
                     f"histogram {a['histogram'] / max(b['histogram'], 1e-9):.2f}x  (> 1: realistic is closer)")
    return "\n".join(lines)


def picture(path: Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], tile: int = 256) -> None:
    from PIL import Image

    from dxr_core.metrics.domain import prepare

    grid = np.vstack([np.hstack([prepare(im, tile) for im in row]) for row in rows])
    img = Image.fromarray(np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8), mode="L")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    img.save(tmp, format="PNG", optimize=True)
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True, help="folder of real chest radiographs")
    ap.add_argument("--ct", action="append", default=[], help="a real chest CT (repeatable)")
    ap.add_argument("--phantoms", type=int, default=2, help="phantom CTs, seeds 0..N-1 (default 2)")
    ap.add_argument("--phantom-spacing", type=float, default=2.0, help="phantom voxel size in mm (default 2)")
    ap.add_argument("--size", type=int, default=512, help="DRR size in pixels (default 512)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N real radiographs")
    ap.add_argument("--out", required=True, help="work folder (DRRs, JSON)")
    ap.add_argument("--png", default=None, help="write the side-by-side picture here (real | raw | realistic)")
    args = ap.parse_args(argv)
    os.environ.setdefault("DXR_NO_PROGRESS", "1")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    real, real_files = real_set(Path(args.real), args.limit)
    print(f"real radiographs: {len(real)} from {args.real} ({time.perf_counter() - t0:.1f} s)", flush=True)

    cts: list[tuple[str, Path, str]] = []
    for c in args.ct:
        p = Path(c)
        cts.append((p.name.replace(" ", "_"), p, "ct"))
    if args.phantoms:
        import SimpleITK as sitk

        from dxr_core.phantom import make_chest_phantom

        for s in range(args.phantoms):
            f = out / "phantoms" / f"phantom_{s}.nrrd"
            if not f.is_file():
                f.parent.mkdir(parents=True, exist_ok=True)
                v = make_chest_phantom(seed=s, spacing_mm=(args.phantom_spacing, args.phantom_spacing,
                                                           max(2.5, args.phantom_spacing)))
                tmp = f.with_name(f".{f.stem}.part.nrrd")
                sitk.WriteImage(v.to_sitk(), str(tmp), True)
                tmp.replace(f)
            cts.append((f"phantom_{s}", f, "phantom"))

    images: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, dict[str, float]] = {}
    for stem, path, kind in cts:
        images[stem], timing[stem] = {}, {}
        for variant in VARIANTS:
            t = time.perf_counter()
            images[stem][variant] = render(path, out, stem, args.size, variant)
            timing[stem][variant] = round(time.perf_counter() - t, 2)
        print(f"{stem}: rendered raw / preset / realistic in {timing[stem]['raw']:.1f} / "
              f"{timing[stem]['preset']:.1f} / {timing[stem]['realistic']:.1f} s", flush=True)

    groups = {"real CT": [s for s, _, k in cts if k == "ct"], "phantom": [s for s, _, k in cts if k == "phantom"]}
    groups["all"] = groups["real CT"] + groups["phantom"]
    results = {}
    for gname, stems in groups.items():
        if not stems:
            continue
        sets = {v: [images[s][v] for s in stems] for v in VARIANTS}
        results[gname] = compare(real, sets)
        print(table(f"\n{gname} ({', '.join(stems)}) vs {len(real)} real radiographs", results[gname]))
    # the same-domain floor: two halves of the real set against each other
    half = len(real) // 2
    if half >= 2:
        floor = compare(real[:half], {"real half": real[half:]})
        results["floor"] = floor
        f = floor["real half"]
        print(f"\nfloor (real first half vs second half): spectrum {f['spectrum']:.4f}, histogram "
              f"{f['histogram']:.4f}")

    rec = {"real": str(args.real), "n_real": len(real), "size": args.size,
           "cts": [str(p) for _, p, _ in cts], "variants": VARIANTS, "results": results, "timing_s": timing}
    tmp = out / ".drr_realism.json.part"
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(out / "drr_realism.json")
    if args.png:
        rows = []
        stems = groups["real CT"][:2] or groups["phantom"][:2]
        for i, s in enumerate(stems):
            rows.append((real[i * 7 % len(real)], images[s]["raw"], images[s]["realistic"]))
        picture(Path(args.png), rows)
        print(f"\npicture: {args.png} ({Path(args.png).stat().st_size / 1024:.0f} KB): "
              f"real ({', '.join(real_files[i * 7 % len(real)].name for i in range(len(rows)))}) | raw | realistic")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; JSON: {out / 'drr_realism.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
