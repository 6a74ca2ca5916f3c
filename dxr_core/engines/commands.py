"""`dxr train munit-lq`: option parsing only (added to the `dxr train` group through its hook); the work is in
:mod:`dxr_core.engines.munit_lq`."""
from __future__ import annotations

_REGISTERED = False


def add_commands(subparsers) -> None:
    global _REGISTERED
    from dxr_core.diffusion.commands import train_subparsers

    if not _REGISTERED:  # the hook list outlives one parser: register once, it is replayed for every new parser
        _REGISTERED = True
        train_subparsers(_add_train_munit)
        train_subparsers(_add_train_ddpm_lq)


def _add_train_munit(tsub) -> None:
    m = tsub.add_parser(
        "munit-lq", help="train MUNIT-LQ: unpaired HQ radiographs <-> DRR style translation (PyTorch-Ignite)",
        description="Train MUNIT (Huang et al. 2018) between real radiographs (--hq) and DRRs (--lq). Resumes from "
                    "RUN/checkpoints when restarted (same loss curve); RUN/model.pt is the translator used by "
                    "`dxr degrade --method munit --option model=RUN/model.pt`. See docs/munit_lq.md.")
    m.add_argument("--hq", required=True, metavar="DIR", help="folder of real (HQ) radiographs")
    m.add_argument("--lq", required=True, metavar="DIR", help="folder of DRRs (LQ style domain)")
    m.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, logs, model.pt)")
    m.add_argument("--preset", default="cpu", help="cpu (default: width 16, 128 crops), cpu-struct (cpu + a structure "
                                                    "loss that keeps the anatomy), paper (width 64, 256 crops), "
                                                    "tiny (tests)")
    m.add_argument("--iters", type=int, default=20000)
    m.add_argument("--crop", type=int, default=None, help="training crop in pixels (default: the preset's)")
    m.add_argument("--image-size", type=int, default=None,
                   help="whole radiographs are resized to this longer side before cropping (default: the preset's)")
    m.add_argument("--batch-size", type=int, default=None)
    m.add_argument("--lr", type=float, default=None)
    m.add_argument("--struct-w", type=float, default=None,
                   help="weight of the structure loss that keeps the anatomy (default: the preset's; 1 for "
                        "cpu-struct, 0 otherwise)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--hq-manifest", default=None, metavar="CSV",
                   help="patient split manifest of --hq (dxr_core.data.radiographs.patient_split): train on its "
                        "--hq-split images only, validate on its val split")
    m.add_argument("--hq-split", default="train", choices=["train", "val", "test"])
    m.add_argument("--val-hq", default=None, metavar="DIR", help="held-out HQ radiographs for validation")
    m.add_argument("--val-lq", default=None, metavar="DIR", help="held-out DRRs for validation")
    m.add_argument("--val-every", type=int, default=500)
    m.add_argument("--ckpt-every", type=int, default=100)
    m.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    m.add_argument("--backend", default=None, choices=["gloo", "nccl"],
                   help="distributed backend (auto under torchrun)")
    m.add_argument("--nproc-per-node", type=int, default=None, help="spawn this many processes (with --backend)")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(run=run_train_munit_lq)


def run_train_munit_lq(args) -> int:
    from dxr_core.engines.munit_lq import MunitTrainConfig, train_munit_lq

    cfg = MunitTrainConfig(hq=args.hq, lq=args.lq, out=args.out, preset=args.preset, iters=args.iters,
                           crop=args.crop, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
                           struct_w=args.struct_w,
                           seed=args.seed, hq_manifest=args.hq_manifest, hq_split=args.hq_split, val_hq=args.val_hq,
                           val_lq=args.val_lq, val_every=args.val_every, ckpt_every=args.ckpt_every,
                           threads=args.threads, backend=args.backend, nproc_per_node=args.nproc_per_node,
                           progress=not args.no_progress)
    s = train_munit_lq(cfg)
    if s:
        print(f"{s['iterations']} iterations ({'complete' if s['completed'] else 'stopped'}); model: {s['model']}",
              flush=True)
    return 0


def _add_train_ddpm_lq(tsub) -> None:
    from dxr_core.argtypes import positive_int

    d = tsub.add_parser(
        "ddpm-lq", help="train DDPM-LQ: a diffusion model of the DRR look, two stages (PyTorch-Ignite)",
        description="Stage 1: an unconditional diffusion model of the DRRs in --lq. Stage 2 (--init STAGE1/model.pt): "
                    "fine-tuned to draw a DRR around the content (coarse version) of an image, so that "
                    "`dxr degrade --method ddpm --option model=RUN/model.pt` turns a real radiograph into its "
                    "DRR-like version. Same networks, schedules, samplers and engine as DDPM-HQ; resumes from "
                    "RUN/checkpoints. See docs/ddpm_lq.md.")
    d.add_argument("--stage", type=int, required=True, choices=(1, 2))
    d.add_argument("--lq", required=True, metavar="DIR", help="folder of DRRs (the LQ domain)")
    d.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, logs, model.pt)")
    d.add_argument("--init", default=None, metavar="PATH", help="stage 2: the stage-1 model (RUN1/model.pt)")
    d.add_argument("--image-size", type=positive_int, default=256, help="DRRs are resized to this grid (default 256)")
    d.add_argument("--content-scale", type=positive_int, default=4,
                   help="stage 2 condition: the image area-averaged by this factor (default 4)")
    d.add_argument("--preset", default="pu-small", help="network preset (as `dxr train ddpm-hq`; default pu-small)")
    d.add_argument("--iters", type=positive_int, default=4000)
    d.add_argument("--batch-size", type=positive_int, default=8)
    d.add_argument("--crop", type=positive_int, default=128)
    d.add_argument("--lr", type=float, default=2e-4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--val-every", type=positive_int, default=500)
    d.add_argument("--ckpt-every", type=positive_int, default=100)
    d.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    d.add_argument("--backend", default=None, choices=["gloo", "nccl"],
                   help="distributed backend (auto under torchrun)")
    d.add_argument("--nproc-per-node", type=positive_int, default=None,
                   help="spawn this many processes (with --backend)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=run_train_ddpm_lq)


def run_train_ddpm_lq(args) -> int:
    from dxr_core.engines.ddpm_lq import LQTrainConfig, train_ddpm_lq

    train = {k: getattr(args, k) for k in ("preset", "iters", "batch_size", "crop", "lr", "seed", "val_every",
                                           "ckpt_every", "threads", "backend", "nproc_per_node")}
    cfg = LQTrainConfig(stage=args.stage, lq=args.lq, out=args.out, image_size=args.image_size,
                        content_scale=args.content_scale, init=args.init,
                        train={**train, "progress": not args.no_progress})
    s = train_ddpm_lq(cfg)
    if s:
        print(f"stage {args.stage}: {s['iterations']} iterations ({'complete' if s['completed'] else 'stopped'}); "
              f"model: {s['model']}", flush=True)
    return 0

