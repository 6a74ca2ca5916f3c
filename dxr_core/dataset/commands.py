"""`dxr dataset` and `dxr dataset-merge`: option parsing only; the work is in :mod:`dxr_core.dataset.builder`."""
from __future__ import annotations

import json

from dxr_core.argtypes import comma_list as _list
from dxr_core.argtypes import min_max
from dxr_core.argtypes import on_off as _bool




def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "dataset", help="a labelled, enhanced nodule-detection dataset from a folder of CTs (sharded, resumable)",
        description="CTs -> nodules inserted in 3-D -> DRRs -> DDPM-HQ enhancement -> images, COCO train/val/test "
                    "(split by patient), manifest and dataset card. Options come from --config (TOML, see "
                    "docs/dataset.md) and flags (flags win). Finished images are skipped on a rerun. Shards: run "
                    "under torchrun (RANK/WORLD_SIZE) or as a SLURM array (SLURM_ARRAY_TASK_ID/COUNT), or give "
                    "--shard I/N; then `dxr dataset-merge --out DIR` once all shards are done.")
    p.add_argument("--ct-dir", required=True, metavar="DIR", help="folder of CTs (DICOM series folders, volume files)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--config", metavar="TOML", help="dataset configuration file")
    p.add_argument("--images-per-ct", type=int, dest="images_per_ct")
    p.add_argument("--preset", help="pa-chest (default), ap-portable, lateral, or none (raw DRR)")
    p.add_argument("--views", type=_list, metavar="LIST", help="pa,ap,lateral,rlat (drawn per image)")
    p.add_argument("--rotation-deg", type=min_max(float), dest="rotation_deg", metavar="MIN,MAX")
    p.add_argument("--kvp", type=min_max(float), metavar="MIN,MAX")
    p.add_argument("--dose", type=min_max(float), metavar="MIN,MAX", help="photons per pixel (0 = noise-free)")
    p.add_argument("--size", type=int, help="DRR side in pixels")
    p.add_argument("--nodules", type=min_max(int), metavar="MIN,MAX", help="nodules per image that has nodules")
    p.add_argument("--nodule-free", type=float, dest="nodule_free", help="share of images without nodules")
    p.add_argument("--nodule-kinds", type=_list, dest="nodule_kinds", metavar="LIST")
    p.add_argument("--nodule-size-mm", type=min_max(float), dest="nodule_size_mm", metavar="MIN,MAX")
    p.add_argument("--enhance", type=_bool, metavar="on|off")
    p.add_argument("--model", help="enhancer checkpoint (default: shipped)")
    p.add_argument("--sampler")
    p.add_argument("--steps", type=int)
    p.add_argument("--scale", type=float)
    p.add_argument("--formats", type=_list, metavar="LIST", help="png,dcm")
    p.add_argument("--split", type=lambda t: [float(x) for x in t.split(",")], metavar="TRAIN,VAL,TEST")
    p.add_argument("--seed", type=int)
    p.add_argument("--shard", metavar="I/N", help="this process's shard (default: from RANK/WORLD_SIZE or SLURM)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_dataset)
    m = subparsers.add_parser("dataset-merge", help="COCO files, manifest and card from the shards of `dxr dataset`")
    m.add_argument("--out", required=True, metavar="DIR")
    m.set_defaults(run=run_merge)


KEYS = ("images_per_ct", "preset", "views", "rotation_deg", "kvp", "dose", "size", "nodules", "nodule_free",
        "nodule_kinds", "nodule_size_mm", "enhance", "model", "sampler", "steps", "scale", "formats", "split", "seed")


def run_dataset(args) -> int:
    from dxr_core.dataset import DatasetConfig, build, merge, shard_from_env
    from dxr_core.errors import OptionError

    cfg = DatasetConfig.load(args.config, {k: getattr(args, k) for k in KEYS})
    if args.shard:
        try:
            rank, world = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise OptionError(f"--shard {args.shard!r} must be I/N, e.g. 0/4.") from None
        if not 0 <= rank < world:
            raise OptionError(f"--shard {args.shard}: I must be 0..N-1.")
    else:
        rank, world = shard_from_env()
    res = build(args.ct_dir, args.out, cfg, rank=rank, world=world, progress=not args.no_progress)
    share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in res["share"].items())
    print(f"shard {rank}/{world}: {res['done']} images made, {res['skipped']} already there, "
          f"{len(res['failed'])} CT(s) failed; time: {share}", flush=True)
    for ct, err in res["failed"].items():
        print(f"  failed {ct}: {err}", flush=True)
    if world == 1:
        summary = merge(args.out)
        print(json.dumps(summary["counts"]), flush=True)
    return 1 if res["failed"] else 0


def run_merge(args) -> int:
    from dxr_core.dataset import merge

    summary = merge(args.out)
    print(json.dumps(summary["counts"]), flush=True)
    return 0
