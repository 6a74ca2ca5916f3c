"""`dxr degrade`: write LQ versions of radiographs with one of the degradation methods (resumable);
`dxr make-pairs`: aligned LQ/HQ training pairs from real radiographs (resumable)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. --option noise=0.01")
    k, v = text.split("=", 1)
    try:
        val = json.loads(v)
    except ValueError:
        val = v  # a plain word, e.g. kernel=sharp
    if isinstance(val, list):
        val = tuple(val)
    return k.strip(), val


def add_commands(subparsers) -> None:
    from dxr_core.degrade.api import METHODS

    p = subparsers.add_parser(
        "degrade", help=f"make low-quality (LQ) radiographs: {', '.join(METHODS)}",
        description="Degrade radiographs (PNG/JPEG/DICOM/NRRD) to LQ images at 1/scale size, written as 16-bit PNG "
                    "plus a JSON sidecar (method, seed, options, the sampled chain). Outputs already written are "
                    "skipped, so an interrupted run resumes. See docs/degrade.md.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="radiograph files or folders")
    p.add_argument("--method", required=True, metavar="M", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (each image gets its own seed derived from "
                                                       "this and its file name; default 0)")
    p.add_argument("--scale", type=float, default=2.0, help="HQ/LQ size ratio (default 2: 1024 -> 512)")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="method option, repeatable; values are JSON (e.g. noise=0.01, kernel=sharp, "
                        "blur_sigma=[0.2,1.5]); see docs/degrade.md")
    p.add_argument("--overwrite", action="store_true", help="write outputs again even if they exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_degrade)

    m = subparsers.add_parser(
        "make-pairs", help="aligned LQ (512) / HQ (1024) training pairs from real radiographs",
        description="HQ = each radiograph's central square at --hq-size, LQ = its degradation at 1/--scale "
                    "(mix: area / bicubic / high_order drawn per pair, seeded). Writes OUT/hq, OUT/lq (16-bit PNG, "
                    "same names: what `dxr train ddpm-hq --pairs` reads) and OUT/pairs.jsonl; pairs already written "
                    "are skipped. Select a split of a patient-level manifest with --manifest/--split (never train on "
                    "a test patient). See docs/degrade.md.")
    m.add_argument("--hq", required=True, metavar="DIR", help="folder of real radiographs")
    m.add_argument("--out", required=True, metavar="DIR", help="output folder")
    m.add_argument("--method", default="mix", metavar="M", help=f"mix (default) or one of: {', '.join(METHODS)}")
    m.add_argument("--manifest", metavar="CSV", help="split manifest (file, patient_id, split) from patient_split")
    m.add_argument("--split", default="train", choices=("train", "val", "test"),
                   help="which split of --manifest to use (default train)")
    m.add_argument("--hq-size", type=int, default=1024, help="HQ side in pixels (default 1024)")
    m.add_argument("--scale", type=float, default=2.0, help="HQ/LQ size ratio (default 2)")
    m.add_argument("--variants", type=int, default=1, help="LQ versions per radiograph (default 1)")
    m.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="option of a single --method, repeatable (e.g. model=RUN/model.pt for munit and ddpm)")
    m.add_argument("--match-tone", action="store_true",
                   help="map each LQ's grey levels onto its HQ's (pairs differ in detail and texture, not tone): "
                        "for mixing kinds of pairs and for keeping nodule contrast")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(run=run_make_pairs)


def run_make_pairs(args: argparse.Namespace) -> int:
    from dxr_core.data.radiographs import list_radiographs, read_manifest
    from dxr_core.degrade.pairs import make_pairs
    from dxr_core.errors import InputError

    root = Path(args.hq).expanduser()
    if not root.is_dir():
        raise InputError(f"--hq {str(root)!r} is not a folder; give the folder of radiographs.")
    files = list_radiographs(root)
    if args.manifest:
        keep = {r["file"] for r in read_manifest(args.manifest) if r["split"] == args.split}
        files = [f for f in files if f.name in keep or str(f.relative_to(root)) in keep]
    if not files:
        raise InputError(f"No radiographs to pair in {str(root)!r}" + (f" for split {args.split!r} of "
                         f"{args.manifest!r}" if args.manifest else "") + ".")
    options = dict(args.option)
    if options and args.method == "mix":
        from dxr_core.errors import OptionError

        raise OptionError("--option applies to a single --method (the mix uses each method's defaults); give "
                          "--method M, e.g. --method ddpm --option model=RUN/model.pt.")
    recs = make_pairs(files, args.out, method=args.method, hq_size=args.hq_size, scale=args.scale, seed=args.seed,
                      variants=args.variants, progress=not args.no_progress, options=options,
                      match_tone=args.match_tone)
    print(f"{len(recs)} pairs in {args.out}", flush=True)
    return 0


def _check_same_run(side: Path, args: argparse.Namespace, options: dict) -> None:
    """A finished output is only skipped when it was made by the same method, seed, scale and options."""
    from dxr_core.errors import OptionError
    from dxr_core.io.radiograph import jsonable

    try:
        prev = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        prev = {}
    same = (prev.get("method") == args.method and prev.get("run_seed") == args.seed
            and prev.get("scale") == float(args.scale)
            and all(jsonable((prev.get("options") or {}).get(k)) == jsonable(v) for k, v in options.items()))
    if not same:
        raise OptionError(f"{side.parent} already holds {side.stem}.png made with other settings (method "
                          f"{prev.get('method')!r}, seed {prev.get('run_seed')!r}, scale {prev.get('scale')!r}); "
                          "use another --out folder or add --overwrite.")


def run_degrade(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from dxr_core.data.radiographs import list_radiographs
    from dxr_core.degrade.api import _function, degrade, image_seed, method_options, output_shape
    from dxr_core.errors import InputError, OptionError
    from dxr_core.io.atomic import write_text_atomic
    from dxr_core.io.radiograph import _stem, dumps_json, read_radiograph, write_radiograph

    _function(args.method)  # unknown method: one clear error before any file is read
    options = dict(args.option)
    bad = sorted(set(options) - set(method_options(args.method)))
    if bad:
        raise OptionError(f"Method {args.method!r} has no option(s) {', '.join(bad)}; its options are: "
                          f"{', '.join(method_options(args.method)) or 'none'}.")
    output_shape((100, 100), args.scale)  # bad --scale: OptionError now
    import numpy as np

    # a dry run on a tiny image: a bad option value or a model that is not shipped fails before any file is read
    degrade(np.zeros((16, 16), np.float32), args.method, seed=0, scale=min(args.scale, 8.0), **options)
    files: list[Path] = []
    for it in args.inputs:
        p = Path(it).expanduser()
        if p.is_dir():
            files += list_radiographs(p)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{str(p)!r} does not exist; give radiograph files or folders.")
    if not files:
        raise InputError("No radiographs found in the given inputs (PNG, JPEG, DICOM, NRRD ...).")
    out = Path(args.out).expanduser()
    stems: dict[str, Path] = {}
    for f in files:
        s = _stem(f)
        if s in stems and stems[s] != f:
            raise OptionError(f"{stems[s]} and {f} would both be written as {s}.png; degrade them into different "
                              "--out folders.")
        stems[s] = f
    done = skipped = 0
    bar = tqdm(stems.items(), desc=f"degrade {args.method}", unit="image",
               disable=True if args.no_progress else None)  # None: no bar when stderr is not a terminal
    for stem, f in bar:
        png, side = out / f"{stem}.png", out / f"{stem}.json"
        if not args.overwrite and png.is_file() and side.is_file():  # the sidecar is written last
            _check_same_run(side, args, options)
            skipped += 1
            continue
        img, spacing, meta = read_radiograph(f)
        seed = image_seed(args.seed, f.name)
        options_i = options
        if args.method == "acquisition" and spacing is not None and "pixel_spacing_mm" not in options:
            options_i = {**options, "pixel_spacing_mm": spacing}
            if meta.get("spacing_source") == "PixelSpacing" and "magnification" not in options:
                options_i["magnification"] = 1.0  # DICOM PixelSpacing is calibrated at the patient already
        lq, params = degrade(img, args.method, seed=seed, scale=args.scale, return_params=True, **options_i)
        new_spacing = None
        if spacing is not None:
            new_spacing = (spacing[0] * img.shape[0] / lq.shape[0], spacing[1] * img.shape[1] / lq.shape[1])
        write_radiograph(lq, new_spacing, png)
        side_info = {"source": str(f), "source_size": list(img.shape), "image_size": list(lq.shape),
                     "run_seed": args.seed, **params}
        if new_spacing is not None:
            side_info["pixel_spacing_mm"] = list(new_spacing)
        write_text_atomic(side, dumps_json(side_info))
        done += 1
    print(f"{done} written, {skipped} already there, in {out}", flush=True)
    return 0
