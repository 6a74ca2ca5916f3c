"""`dxr enhance`, `dxr train ddpm-hq`, `dxr evaluate`: option parsing only; the work is in the library.

`dxr train` is a command group; other trainers can add theirs with :func:`train_subparsers` (e.g. ``munit-lq``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from dxr_core.errors import InputError, OptionError

_TRAIN_SUB = None
_TRAIN_HOOKS: list = []


def train_subparsers(hook=None):
    """Register ``hook(subparsers)`` to add a `dxr train <name>` trainer (called when the parser is built)."""
    if hook is not None:
        _TRAIN_HOOKS.append(hook)
        if _TRAIN_SUB is not None:
            hook(_TRAIN_SUB)
    return _TRAIN_SUB


def add_commands(subparsers) -> None:
    global _TRAIN_SUB
    p = subparsers.add_parser(
        "enhance", help="enhance and super-resolve radiographs with the DDPM-HQ diffusion model",
        description="Enhance radiographs (PNG/DICOM/NRRD, same format out; DICOM keeps its tags with the new pixel "
                    "spacing) with the conditional diffusion model. Default model: the shipped weights.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="radiograph files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default=None, metavar="PATH", help="enhancer checkpoint (default: shipped weights)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help=f"ddim (eta 0: deterministic), dpmpp = DPM-Solver++ 2M, ddpm = full ancestral chain "
                        f"(T evaluations: slow); default: the model's (its model card; else {DEFAULT_SAMPLER})")
    p.add_argument("--steps", type=int, default=None,
                   help="network evaluations for ddim/dpmpp (default: the model's, see its model card; else "
                        f"{DEFAULT_STEPS}). 1 gives the model's estimate of the mean HQ image (best PSNR); more "
                        "steps draw a sample with sharper, partly invented detail")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="scale of the initial noise, 0..1 (default: the model's, see its model card; else 1). "
                        "0 starts from the mean: the least added noise")
    p.add_argument("--scale", type=float, default=2.0, help="output/input size ratio (default 2: 512 -> 1024)")
    p.add_argument("--tile", type=int, default=512, help="maximum tile size in output pixels (0 = no tiling)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in output pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.set_defaults(run=run_enhance)

    t = subparsers.add_parser("train", help="train models (ddpm-hq: the conditional diffusion enhancer)")
    tsub = t.add_subparsers(dest="trainer", metavar="MODEL", parser_class=subparsers._parser_class)
    _TRAIN_SUB = tsub
    d = tsub.add_parser("ddpm-hq", help="train the DDPM-HQ enhancer on paired LQ/HQ folders (PyTorch-Ignite)",
                        description="Train the conditional diffusion enhancer on DIR/lq + DIR/hq pairs. Resumes from "
                                    "RUN/checkpoints when restarted; runs under torchrun for several GPUs/processes.")
    d.add_argument("--pairs", required=True, metavar="DIR", help="folder with lq/ and hq/ sub-folders")
    d.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, logs, model.pt)")
    d.add_argument("--preset", default="pu-small", help="model preset: tiny, pu-small (default), pu-medium, pu-fast, "
                                                          "pu-base, monai-tiny, paper")
    d.add_argument("--iters", type=int, default=2000)
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--crop", type=int, default=128)
    d.add_argument("--lr", type=float, default=2e-4)
    d.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="learning rate over the run: constant (default) or a half cosine from --lr to --lr/100 "
                        "over --iters (Ignite CosineAnnealingScheduler)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--schedule", default="cosine", choices=["cosine", "linear"])
    d.add_argument("--timesteps", type=int, default=1000, help="T (the paper: 2000)")
    d.add_argument("--prediction", default="v", choices=["eps", "v"])
    d.add_argument("--loss", default="l2", choices=["l1", "l2"])
    d.add_argument("--t-range", default="0,1", metavar="LO,HI",
                   help="train on timesteps in [LO*T, HI*T) (default 0,1: all). 0.9,1 tunes a model for one or a "
                        "few sampling steps (its estimate of the mean HQ image: best PSNR), at the cost of many-step "
                        "sampling")
    d.add_argument("--val-every", type=int, default=250)
    d.add_argument("--val-steps", type=int, default=10)
    d.add_argument("--ckpt-every", type=int, default=50)
    d.add_argument("--ema-decay", type=float, default=0.999)
    d.add_argument("--num-workers", type=int, default=0)
    d.add_argument("--backend", default=None, choices=["gloo", "nccl"],
                   help="distributed backend (auto under torchrun)")
    d.add_argument("--nproc-per-node", type=int, default=None, help="spawn this many processes (with --backend)")
    d.add_argument("--init", default=None, metavar="PATH",
                   help="fine-tune from this enhancer checkpoint ('shipped' = the shipped weights); its network and "
                        "diffusion set-up are kept, --preset/--schedule/--prediction/--timesteps are ignored")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(run=run_train_ddpm_hq)
    for hook in _TRAIN_HOOKS:
        hook(tsub)

    e = subparsers.add_parser("evaluate", help="PSNR / SSIM / MS-SSIM against references; domain gap to real images",
                              description="Compare same-named images in --pred and --ref (optionally inside lung "
                                          "masks); prints a table and writes JSON. With --domain REF_DIR, also (or "
                                          "instead) measure the unpaired domain gap between the --pred set and the "
                                          "REF_DIR set (power-spectrum distance, regional histogram distance, "
                                          "classifier two-sample test; see docs/domain_gap.md).")
    e.add_argument("--pred", required=True, metavar="DIR")
    e.add_argument("--ref", default=None, metavar="DIR", help="same-named reference images (paired metrics)")
    e.add_argument("--lung-mask", default=None, metavar="PATH", help="mask image or folder of same-named masks")
    e.add_argument("--json", default=None, metavar="FILE", help="write the results here (default PRED/metrics.json)")
    e.add_argument("--domain", default=None, metavar="REF_DIR",
                   help="folder of reference radiographs (e.g. real ones) for the unpaired domain-gap measures")
    e.add_argument("--domain-json", default=None, metavar="FILE",
                   help="write the domain-gap results here (default PRED/domain_gap.json)")
    e.add_argument("--domain-groups", default=None, metavar="REGEX",
                   help="split the classifier test by patient / CT: REGEX's first group (or whole match) in each "
                        "file name names its patient, e.g. '^(.+)_\\d+$' for dxr dataset's <CT>_<NNNN> names "
                        "(default: random halves)")
    e.add_argument("--domain-size", type=int, default=None, metavar="PX",
                   help="common grid for the domain-gap measures (default: 256, or the shortest image side if smaller)")
    e.add_argument("--seed", type=int, default=0, help="seed of the classifier two-sample test split (default 0)")
    e.set_defaults(run=run_evaluate)


def _collect_inputs(items) -> list[Path]:
    from dxr_core.data.pairs import list_images

    files = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p} does not exist; give radiograph files or folders.")
    if not files:
        raise InputError("no radiographs found in the given inputs (PNG, DICOM, NRRD...).")
    return files


def run_enhance(args) -> int:
    from dxr_core.diffusion.enhancer import load_enhancer
    from dxr_core.io import read_radiograph, write_radiograph

    if args.steps is not None and args.steps < 1:
        raise OptionError("--steps must be at least 1 (the default is the model's, see its model card).")
    if args.tile < 0:
        raise OptionError("--tile must be 0 (no tiling) or a positive number of pixels such as 512.")
    files = _collect_inputs(args.inputs)
    enh = load_enhancer(args.model, device=args.device)
    sampler, steps = enh.resolve_sampling(args.sampler, args.steps)  # None: the model's own
    temperature = enh.resolve_temperature(args.temperature)  # checked before any output is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        img, spacing, meta = read_radiograph(f)
        res = enh.enhance(img, scale=args.scale, sampler=sampler, steps=steps, seed=args.seed,
                          tile=args.tile or None, overlap=args.overlap, eta=args.eta, progress=sys.stderr.isatty(),
                          temperature=temperature)
        new_spacing = None
        if spacing is not None:
            new_spacing = (spacing[0] * img.shape[0] / res.shape[0], spacing[1] * img.shape[1] / res.shape[1])
        name = f.name if meta.get("format") != "dcm" or f.suffix.lower() in (".dcm", ".dicom") else f.name + ".dcm"
        dst = out / name
        desc = (f"DDPM-HQ enhanced x{args.scale:g} ({sampler}, {enh.evaluations(sampler, steps)} NFE, "
                f"temperature {temperature:g})")
        write_radiograph(res, new_spacing, dst, template_meta=meta, description=desc)
        _carry_labels(f, dst, meta, img.shape, res.shape)
        print(f"{f} -> {dst} ({img.shape[1]}x{img.shape[0]} -> {res.shape[1]}x{res.shape[0]})", flush=True)
    return 0


def _carry_labels(src: Path, dst: Path, meta: dict, lq_shape, hq_shape) -> None:
    """A DRR's sidecar (projection matrix) and COCO labels, rescaled to the enhanced grid, next to the output."""
    import json

    from dxr_core.io.atomic import write_text_atomic
    from dxr_core.io.radiograph import _stem
    from dxr_core.nodules.rescale import rescale_coco, rescale_sidecar

    sy, sx = hq_shape[0] / lq_shape[0], hq_shape[1] / lq_shape[1]
    stem = _stem(dst)
    side = meta.get("sidecar")
    if side and dst.suffix.lower() != ".json":
        write_text_atomic(dst.with_name(stem + ".json"), json.dumps(rescale_sidecar(side, hq_shape, sy, sx), indent=1))
    coco_path = src.with_name(_stem(src) + ".coco.json")
    if coco_path.is_file():
        from dxr_core.nodules.labels import read_coco

        coco = rescale_coco(read_coco(coco_path), hq_shape, sy, sx, file_name=dst.name)
        write_text_atomic(dst.with_name(stem + ".coco.json"), json.dumps(coco, indent=1))


def _init_path(init: str | None) -> str | None:
    if init is None:
        return None
    if init == "shipped":
        from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS

        return str(DEFAULT_WEIGHTS)
    if not Path(init).is_file():
        raise InputError(f"--init {init}: no such checkpoint; give an enhancer .pt file or 'shipped'.")
    return init


def _t_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise OptionError(f"--t-range {text!r}: give two fractions of T, LO,HI (e.g. 0.9,1).") from None
    return lo, hi


def run_train_ddpm_hq(args) -> int:
    from dxr_core.engines.ddpm_hq import TrainConfig, train_ddpm_hq

    cfg = TrainConfig(pairs=args.pairs, out=args.out, preset=args.preset, iters=args.iters,
                      batch_size=args.batch_size, crop=args.crop, lr=args.lr, lr_schedule=args.lr_schedule,
                      seed=args.seed, schedule=args.schedule,
                      timesteps=args.timesteps, prediction=args.prediction, loss=args.loss,
                      val_every=args.val_every, val_steps=args.val_steps, ckpt_every=args.ckpt_every,
                      ema_decay=args.ema_decay, num_workers=args.num_workers, backend=args.backend,
                      nproc_per_node=args.nproc_per_node, progress=not args.no_progress, init=_init_path(args.init),
                      t_range=_t_range(args.t_range))
    from dxr_core.models import get_config

    get_config(cfg.preset)  # unknown preset -> OptionError before anything starts
    summary = train_ddpm_hq(cfg)
    print(json.dumps(summary, indent=2))
    return 0


def run_evaluate(args) -> int:
    from dxr_core.io.atomic import write_text_atomic

    if args.ref is None and args.domain is None:
        raise OptionError("Give --ref DIR (same-named references: PSNR/SSIM) and/or --domain REF_DIR (a set of "
                          "reference radiographs: domain gap).")
    if args.ref is not None:
        from dxr_core.metrics.image import evaluate_folders, format_table

        res = evaluate_folders(args.pred, args.ref, args.lung_mask)
        print(format_table(res))
        dst = Path(args.json) if args.json else Path(args.pred) / "metrics.json"
        write_text_atomic(dst, json.dumps(res, indent=2))
        print(f"metrics written to {dst}")
    if args.domain is not None:
        from dxr_core.metrics.domain import domain_gap_folders, format_domain_table

        if args.domain_size is not None and args.domain_size < 32:
            raise OptionError(f"--domain-size {args.domain_size} is too small; use 256 (or at least 32).")
        res = domain_gap_folders(args.domain, args.pred, size=args.domain_size, seed=args.seed,
                                 progress=sys.stderr.isatty(), group_pattern=args.domain_groups)
        print(format_domain_table(res))
        dst = Path(args.domain_json) if args.domain_json else (
            Path(args.json) if args.json and args.ref is None else Path(args.pred) / "domain_gap.json")
        write_text_atomic(dst, json.dumps(res, indent=2))
        print(f"domain gap written to {dst}")
    return 0
