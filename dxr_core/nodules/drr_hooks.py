"""`dxr drr` hooks: ``--nodules N`` inserts N random lung nodules (seeded) and writes ``<stem>.coco.json``.

The base DRR is rendered as usual; each nodule is then added by re-tracing only the rays through its box
(:func:`dxr_core.nodules.add_nodules_to_drr`), so nodules cost milliseconds, not a full render.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dxr_core.argtypes import comma_list as _list
from dxr_core.argtypes import min_max
from dxr_core.errors import OptionError


def _pair(text: str) -> tuple[float, float]:
    lo, hi = min_max(float, "MIN,MAX in mm (e.g. 6,20)")(text)
    return (lo, hi)


def _point(text: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y,z in mm (LPS)") from None
    if len(v) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y,z in mm (LPS)")
    return v  # type: ignore[return-value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("nodules (dxr_core.nodules)")
    g.add_argument("--nodules", type=int, default=0, metavar="N",
                   help="insert N random lung nodules and write <stem>.coco.json labels (default 0)")
    g.add_argument("--nodule-at", type=_point, action="append", default=None, metavar="X,Y,Z",
                   help="also insert a nodule centred at this LPS point in mm (repeatable)")
    g.add_argument("--nodule-kinds", type=_list, default=None, metavar="LIST",
                   help="kinds to draw from: solid,part_solid,ggo,calcified (default all)")
    g.add_argument("--nodule-shapes", type=_list, default=None, metavar="LIST",
                   help="shapes to draw from: sphere,ellipsoid,lobulated,spiculated (default all)")
    g.add_argument("--nodule-diameter", type=_pair, default=(6.0, 20.0), metavar="MIN,MAX",
                   help="diameter range in mm, within 3-30 (default 6,20)")
    g.add_argument("--nodule-seed", type=int, default=None, help="placement seed (default: the render seed)")
    g.add_argument("--nodule-location", default="random",
                   choices=("random", "intraparenchymal", "juxtapleural", "perifissural"),
                   help="where random nodules sit: random (literature mix 50/30/20 %%, docs/nodules.md) or one place")
    g.add_argument("--nodule-overlap", action="store_true",
                   help="allow the 2-D boxes of random nodules to overlap (default: re-drawn until they do not)")


def _active(args) -> bool:
    return bool(getattr(args, "nodules", 0)) or bool(getattr(args, "nodule_at", None))


def settings(args) -> dict:
    if not _active(args):
        return {}
    out = {"n": int(args.nodules), "at": [list(p) for p in (args.nodule_at or [])],
           "kinds": args.nodule_kinds, "shapes": args.nodule_shapes,
           "diameter_mm": list(args.nodule_diameter), "seed": args.nodule_seed}
    # recorded only when not the default, so default requests read the same as the server's
    if getattr(args, "nodule_location", "random") != "random":
        out["location"] = args.nodule_location
    if getattr(args, "nodule_overlap", False):
        out["allow_overlap"] = True
    return {"nodules": out}


def expected_outputs(args, out_dir: Path, stem: str) -> list[Path]:
    return [Path(out_dir) / f"{stem}.coco.json"] if _active(args) else []


def _validate(args) -> None:
    from dxr_core.nodules.models import KINDS, SHAPES

    if args.nodules < 0:
        raise OptionError(f"--nodules {args.nodules} is negative; give 0 or more.")
    for name, vals, allowed in (("--nodule-kinds", args.nodule_kinds, KINDS),
                                ("--nodule-shapes", args.nodule_shapes, SHAPES)):
        bad = [v for v in (vals or []) if v not in allowed]
        if bad:
            raise OptionError(f"{name}: unknown {', '.join(bad)}; use {','.join(allowed)}.")


def after_render(job) -> None:
    args = job.args
    if not _active(args):
        return
    _validate(args)
    from dataclasses import replace

    from dxr_core.nodules.labels import add_nodules_to_drr, to_coco, write_coco
    from dxr_core.pipeline import make_nodules

    p = replace(job.params, nodules=int(args.nodules), nodule_types=args.nodule_kinds,
                nodule_points=[list(q) for q in args.nodule_at] if args.nodule_at else None,
                nodule_shapes=args.nodule_shapes, nodule_size=tuple(args.nodule_diameter),
                nodule_seed=args.nodule_seed, nodule_location=getattr(args, "nodule_location", "random"),
                nodule_overlap=bool(getattr(args, "nodule_overlap", False)))
    nods = make_nodules(job.volume, p, geometry=job.drr.geometry)
    drr, _vol, labels = add_nodules_to_drr(job.drr, job.volume, nods, seed=job.seed)
    job.drr = drr
    path = Path(job.out_dir) / f"{job.stem}.coco.json"
    write_coco(path, to_coco([(f"{job.stem}.png", drr, labels)]))
    job.extra_outputs.append(path)
    job.sidecar_extra["nodules"] = [{k: v for k, v in lab.items() if k != "segmentation" and not k.startswith("time_")}
                                    for lab in labels]
