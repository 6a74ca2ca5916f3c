"""PyTorch-Ignite trainer for the conditional diffusion enhancer (DDPM-HQ) on paired LQ/HQ folders.

* data: :mod:`dxr_core.data.pairs` (MONAI random crops / flips / 90° rotations), batch of iteration ``it`` is a pure
  function of (seed, it, rank), as is the diffusion noise and the timesteps: a resumed run continues the very same
  loss curve (``Checkpoint`` stores model, EMA, optimizer, AMP scaler and the engine state).
* AdamW, gradient clipping, EMA weights (exported), AMP (float16 autocast + GradScaler) on CUDA only.
* ``ignite.distributed.Parallel``: the same function runs single-process, spawned (``nproc_per_node``), or under
  ``torchrun --nproc_per_node N`` (backend nccl on GPUs, gloo on CPU processes).
* periodic validation on a held-out split with a fast sampler (PSNR/SSIM vs HQ, and the bicubic baseline), TensorBoard
  logs, an ignite ``ProgressBar``; ``RUN/model.pt`` (EMA, enhancer format) is written at every validation.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dxr_core.diffusion.defaults import DEFAULT_SAMPLER
from dxr_core.errors import OptionError


@dataclass
class TrainConfig:
    pairs: str
    out: str
    preset: str = "pu-small"
    iters: int = 2000
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    lr_schedule: str = "constant"  # "cosine": Ignite CosineAnnealingScheduler from lr to lr/100 over iters
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    schedule: str = "cosine"
    timesteps: int = 1000
    prediction: str = "v"
    residual: bool = True
    loss: str = "l2"  # the paper used L1 ("l1")
    val_every: int = 250
    val_fraction: float = 0.1
    val_images: int = 4
    val_sampler: str = DEFAULT_SAMPLER
    val_steps: int = 10
    ckpt_every: int = 50
    n_saved: int = 2
    amp: bool | None = None  # None: on for CUDA
    num_workers: int = 0
    log_every: int = 10
    progress: bool = True
    backend: str | None = None  # None: single process; "gloo" / "nccl"
    nproc_per_node: int | None = None
    stop_at: int | None = None  # stop (as if killed) after this iteration, checkpoint kept: for resume tests
    threads: int | None = None
    init: str | None = None  # fine-tune from this enhancer checkpoint (its network + diffusion set-up win)
    t_range: tuple[float, float] = (0.0, 1.0)  # train on timesteps in [lo*T, hi*T): (0.9, 1) tunes few-step use
    condition: str = "lq"  # "lq": the upsampled LQ image; "none": zeros (an unconditional model, DDPM-LQ stage 1)
    extra_meta: dict | None = None  # recorded in the exported model's meta (e.g. DDPM-LQ's stage and scales)

    def validate(self):
        if self.iters < 1:
            raise OptionError("--iters must be at least 1.")
        if self.batch_size < 1 or self.crop < 8:
            raise OptionError("--batch-size must be >= 1 and --crop >= 8.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise OptionError(f"unknown --lr-schedule {self.lr_schedule!r}; use 'constant' or 'cosine'.")
        if self.loss not in ("l1", "l2"):
            raise OptionError(f"unknown loss {self.loss!r}; use 'l1' or 'l2'.")
        if self.backend not in (None, "gloo", "nccl"):
            raise OptionError(f"unknown backend {self.backend!r}; use gloo (CPU) or nccl (GPU).")
        lo, hi = (float(v) for v in self.t_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise OptionError(f"--t-range {lo:g},{hi:g} must be two fractions of T with 0 <= LO < HI <= 1 "
                              "(e.g. 0.9,1 to tune the model for one or a few sampling steps).")
        if self.condition not in ("lq", "none"):
            raise OptionError(f"unknown condition {self.condition!r}; use 'lq' or 'none'.")


def _iter_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def estimate_residual_scale(pairs, target_std: float = 0.5) -> float:
    """Scale so that (HQ - up(LQ)) has ~``target_std`` spread (rounded, in [1, 50])."""
    r = torch.cat([(p.hq - p.cond).flatten() for p in pairs])
    std = float(r.std()) if r.numel() > 1 else 0.0
    if std <= 1e-6:
        return 1.0
    return float(np.clip(round(target_std / std, 1), 1.0, 50.0))


def train_ddpm_hq(cfg: TrainConfig) -> dict:
    """Train (or resume) a DDPM-HQ run in ``cfg.out``. Returns the final summary (also RUN/summary.json)."""
    from dxr_core.engines.launch import launch

    cfg.validate()
    return launch(_training, cfg)


def _training(local_rank: int, cfg_dict: dict) -> None:  # noqa: C901 - one readable training script
    import ignite.distributed as idist
    from ignite.engine import Engine
    from dxr_core.data.pairs import PatchDataset, find_pairs, load_pairs, split_pairs
    from dxr_core.diffusion.enhancer import Enhancer
    from dxr_core.diffusion.schedule import DiffusionConfig, NoiseSchedule
    from dxr_core.engines.common import (attach_logging, checkpoint_and_resume, process_setup, record_start,
                                         run_iterations)
    from dxr_core.io.atomic import write_text_atomic
    from dxr_core.models import build_model, get_config

    cfg = TrainConfig(**cfg_dict)
    rank, world, device = process_setup(cfg.threads)
    out = Path(cfg.out)
    amp = (device.type == "cuda") if cfg.amp is None else bool(cfg.amp and device.type == "cuda")

    # ---------------- data
    files = find_pairs(cfg.pairs)
    train_files, val_files = split_pairs(files, cfg.val_fraction)
    train_pairs = load_pairs(cfg.pairs, train_files)
    val_pairs = load_pairs(cfg.pairs, val_files[: cfg.val_images]) if val_files else []
    dataset = PatchDataset(train_pairs, cfg.crop, cfg.seed)

    # ---------------- model / diffusion
    init = Enhancer.from_checkpoint(cfg.init) if cfg.init else None
    if init is not None:
        mcfg, dcfg = init.model_config, init.diffusion
    else:
        mcfg = get_config(cfg.preset)
        dcfg = DiffusionConfig(schedule=cfg.schedule, num_train_timesteps=cfg.timesteps, prediction=cfg.prediction,
                               residual=cfg.residual,
                               residual_scale=estimate_residual_scale(train_pairs) if cfg.residual else 1.0)
    schedule = NoiseSchedule(dcfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    net = build_model(mcfg)
    if init is not None:
        net.load_state_dict(init.model.state_dict())
    ema = copy.deepcopy(net).to(device).eval().requires_grad_(False)
    model = idist.auto_model(net)
    optimizer = idist.auto_optim(torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    lossfn = torch.nn.functional.l1_loss if cfg.loss == "l1" else torch.nn.functional.mse_loss
    raw = model.module if hasattr(model, "module") else model

    def train_step(engine, batch):
        it = engine.state.iteration
        model.train()
        cond = batch["cond"].to(device, non_blocking=True)
        hq = batch["hq"].to(device, non_blocking=True)
        if cfg.condition == "none":
            cond = torch.zeros_like(cond)
        x0 = (hq - cond) * dcfg.residual_scale if dcfg.residual else hq
        g = torch.Generator().manual_seed(_iter_seed(cfg.seed, it, rank, 1))
        t_lo = min(schedule.T - 1, int(cfg.t_range[0] * schedule.T))
        t = torch.randint(t_lo, max(t_lo + 1, int(round(cfg.t_range[1] * schedule.T))), (x0.shape[0],), generator=g)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = t.to(device)
        x_t = schedule.add_noise(x0, noise, t)
        target = schedule.target(x0, noise, t)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            pred = model(torch.cat([x_t, cond], dim=1), t.float())
        loss = lossfn(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        decay = min(cfg.ema_decay, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), raw.parameters()):
                pe.lerp_(p.detach(), 1 - decay)
            for be, b in zip(ema.buffers(), raw.buffers()):
                be.copy_(b)
        lv = loss.detach()
        if world > 1:
            lv = idist.all_reduce(lv.clone()) / world
        return {"loss": float(lv), "grad_norm": float(gnorm)}

    trainer = Engine(train_step)
    to_save = {"trainer": trainer, "model": model, "ema": ema, "optimizer": optimizer, "scaler": scaler}
    if cfg.lr_schedule == "cosine":
        from ignite.engine import Events
        from ignite.handlers import CosineAnnealingScheduler

        # half a cosine from lr to lr/100 over the run's --iters; its position is checkpointed with the rest, so a
        # resumed run continues the same curve (a longer --iters on resume starts a new cycle from lr)
        lr_sched = CosineAnnealingScheduler(optimizer, "lr", start_value=cfg.lr, end_value=cfg.lr / 100,
                                            cycle_size=cfg.iters + 1)
        trainer.add_event_handler(Events.ITERATION_STARTED, lr_sched)
        to_save["lr_scheduler"] = lr_sched
    start, last, checkpoint = checkpoint_and_resume(trainer, to_save, out, n_saved=cfg.n_saved,
                                                    every=cfg.ckpt_every, device=device, rank=rank)
    prev = record_start(out, last is not None, start, cfg.iters, rank,
                        lambda prev: {"train_config": cfg_dict, "model_config": mcfg.to_dict(),
                                      "diffusion": (prev.get("diffusion") or dcfg.to_dict())})
    if prev.get("diffusion"):  # the diffusion set-up of the run, not a fresh estimate
        dcfg = DiffusionConfig.from_dict(prev["diffusion"])
        schedule = NoiseSchedule(dcfg)
    tb = attach_logging(trainer, out, start, rank, row=lambda e: {"loss": e.state.output["loss"],
                                                                  "grad_norm": e.state.output["grad_norm"],
                                                                  "lr": optimizer.param_groups[0]["lr"]},
                        scalars=lambda o: {"loss": o["loss"]}, bar=lambda o: {"loss": o["loss"]},
                        log_every=cfg.log_every, progress=cfg.progress)

    best = {"psnr": -math.inf}
    history: list[dict] = []

    # a model that never saw timesteps below LO*T (--t-range 0.9,1 and the like) is only meant to be sampled from the
    # top in one step (its estimate of the mean HQ image); many-step samplers would feed it noise levels it never
    # learned, so its file says so and `dxr enhance` / the server use one step unless told otherwise
    sampling = {"sampling": {"sampler": "ddim", "steps": 1}} if cfg.t_range[0] >= 0.5 else {}

    def export(tag: str, metrics: dict | None = None):
        enh = Enhancer(copy.deepcopy(ema).cpu(), mcfg, dcfg,
                       meta={"iteration": trainer.state.iteration, "preset": cfg.preset, "seed": cfg.seed,
                             "init": cfg.init, "condition": cfg.condition,
                             "pairs": str(cfg.pairs), "train_config": cfg_dict, "val": metrics or {},
                             **sampling, **(cfg.extra_meta or {})})
        enh.save(out / tag)
        return enh

    def validate(engine):
        if not val_pairs or cfg.condition == "none":  # an unconditional model has nothing to restore
            if rank == 0:
                export("model.pt")
            return
        if rank == 0:
            from dxr_core.metrics import psnr, ssim

            enh = Enhancer(copy.deepcopy(ema).eval(), mcfg, dcfg, device=str(device))
            rows = []
            for i, p in enumerate(val_pairs):
                lq = (p.lq[None] + 1) / 2
                pred = enh.enhance_tensor(lq, sampler=cfg.val_sampler, steps=cfg.val_steps, seed=cfg.seed + i,
                                          tile=None, out_size=tuple(p.hq.shape[-2:]))[0, 0].numpy()
                ref = ((p.hq[0] + 1) / 2).numpy()
                bic = ((p.cond[0] + 1) / 2).clamp(0, 1).numpy()
                rows.append((psnr(pred, ref), ssim(pred, ref), psnr(bic, ref), ssim(bic, ref)))
            m = np.mean(np.array(rows), axis=0)
            metrics = {"iteration": engine.state.iteration, "psnr": float(m[0]), "ssim": float(m[1]),
                       "psnr_bicubic": float(m[2]), "ssim_bicubic": float(m[3]),
                       "sampler": f"{cfg.val_sampler}-{cfg.val_steps}"}
            history.append(metrics)
            with open(out / "val.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            if tb is not None:
                for k in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic"):
                    tb.writer.add_scalar(f"val/{k}", metrics[k], engine.state.iteration)
            export("model.pt", metrics)
            if metrics["psnr"] > best["psnr"]:
                best.update(metrics)
                export("model_best.pt", metrics)
            print(f"[val it {engine.state.iteration}] PSNR {metrics['psnr']:.2f} dB (bicubic "
                  f"{metrics['psnr_bicubic']:.2f}), SSIM {metrics['ssim']:.4f} (bicubic {metrics['ssim_bicubic']:.4f})",
                  flush=True)
        if world > 1:
            idist.barrier()

    t0 = time.time()
    run_iterations(trainer, dataset, batch_size=cfg.batch_size, start=start, iters=cfg.iters,
                   resumed=last is not None, rank=rank, world=world, validate=validate, val_every=cfg.val_every,
                   checkpoint=checkpoint, stop_at=cfg.stop_at, num_workers=cfg.num_workers,
                   pin_memory=device.type == "cuda")
    if tb is not None:
        tb.close()
    if rank == 0:
        done = trainer.state.iteration
        summary = {"iterations": done, "completed": done >= cfg.iters, "seconds": time.time() - t0,
                   "last_val": history[-1] if history else None, "best_val": best if history else None,
                   "model": str(out / "model.pt"), "diffusion": dcfg.to_dict(), "preset": cfg.preset,
                   "world_size": world}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    if world > 1:
        idist.barrier()


def read_loss_log(run: str | os.PathLike) -> list[dict]:
    """The per-iteration log of a run (``RUN/loss.jsonl``)."""
    from dxr_core.engines.common import read_log

    return read_log(run)
