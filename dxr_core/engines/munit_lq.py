"""PyTorch-Ignite trainer for MUNIT-LQ: unpaired HQ (real radiographs) <-> LQ (DRRs) translation (Huang et al. 2018).

Built the way Ignite's own examples are (``create_trainer`` / ``create_evaluator``, ``Checkpoint`` + ``DiskSaver``,
``ProgressBar``, ``ignite.distributed``: ``idist.Parallel``, ``auto_model``, ``auto_optim``) and with the house rules of
:mod:`dxr_core.engines.ddpm_hq`:

* the batch of iteration ``it`` (which HQ and LQ image, which crop) and the sampled style codes are pure functions of
  (seed, it, rank); the learning rate is a function of ``it`` (halved every ``lr_step``); so a run killed at any time
  and restarted continues the very same loss curve and ends with the same weights (``Checkpoint`` stores both
  networks, both optimizers and the engine state; ``torch.load(weights_only=True)``);
* one iteration: generators forward (one call), discriminator step on (real, detached fakes), generator step
  (adversarial + 10 x image reconstruction + content and style reconstruction);
* ``RUN/model.pt``: the generators + JSON config (:class:`dxr_core.models.munit.MunitTranslator`), written at every
  validation and at the end; validation translates held-out HQ images with fixed styles and reports the spectrum
  distance to the LQ images (:mod:`dxr_core.metrics.domain`) and the SSIM to their HQ sources (content kept).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dxr_core.errors import InputError, OptionError


@dataclass
class MunitTrainConfig:
    hq: str
    lq: str
    out: str
    preset: str = "cpu"
    iters: int = 20000
    crop: int | None = None          # None: the preset's
    image_size: int | None = None    # None: the preset's
    batch_size: int | None = None
    lr: float | None = None
    struct_w: float | None = None    # None: the preset's structure-loss weight
    seed: int = 0
    hq_manifest: str | None = None   # patient split manifest (dxr_core.data.radiographs.patient_split)
    hq_split: str = "train"
    val_hq: str | None = None        # held-out HQ folder for validation (default: the manifest's "val" split)
    val_lq: str | None = None        # LQ folder for validation (default: the training LQ images)
    val_every: int = 500
    val_images: int = 8
    best_ssim_floor: float = 0.5     # RUN/model_best.pt: lowest validation spectrum distance with SSIM >= this
    ckpt_every: int = 100
    n_saved: int = 2
    log_every: int = 10
    progress: bool = True
    backend: str | None = None
    nproc_per_node: int | None = None
    stop_at: int | None = None
    threads: int | None = None

    def validate(self):
        if self.iters < 1:
            raise OptionError("--iters must be at least 1.")
        if self.crop is not None and self.crop < 16:
            raise OptionError("--crop must be at least 16 pixels.")
        if self.backend not in (None, "gloo", "nccl"):
            raise OptionError(f"unknown backend {self.backend!r}; use gloo (CPU) or nccl (GPU).")
        if self.val_every < 1 or self.ckpt_every < 1:
            raise OptionError("--val-every and --ckpt-every must be at least 1.")
        if self.struct_w is not None and not (self.struct_w >= 0):
            raise OptionError(f"--struct-w must be 0 or more (got {self.struct_w}); 0 turns the structure loss off.")
        for name in ("hq", "lq"):
            if not Path(getattr(self, name)).expanduser().is_dir():
                raise InputError(f"--{name} {getattr(self, name)!r} is not a folder; give a folder of "
                                 f"{'real radiographs' if name == 'hq' else 'DRRs'}.")

    def model_config(self):
        from dxr_core.models.munit import get_munit_config

        return get_munit_config(self.preset, crop=self.crop, image_size=self.image_size, batch_size=self.batch_size,
                                lr=self.lr, struct_w=self.struct_w)


def _iter_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def load_images(folder: str | os.PathLike, size: int, manifest: str | None = None, split: str | None = None,
                files: list | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Radiographs of a folder (or of a manifest split) on a ``size`` grid (longer side, padded with air)."""
    from dxr_core.data.radiographs import RadiographFolder

    ds = RadiographFolder(folder, files=files, manifest=manifest, split=split)
    return [_grid(ds.load(i), size) for i in range(len(ds))], [str(f) for f in ds.files]


def _grid(img: np.ndarray, size: int) -> np.ndarray:
    from dxr_core.data.radiographs import resize_radiograph

    return resize_radiograph(img, int(size), "pad").astype(np.float32)


class UnpairedCrops(torch.utils.data.Dataset):
    """Index -> ``{"hq": (1, c, c), "lq": (1, c, c)}`` random crops in [-1, 1], a pure function of (seed, index)."""

    def __init__(self, hq: list[np.ndarray], lq: list[np.ndarray], crop: int, seed: int = 0,
                 length: int = 2 ** 31 - 1):
        if not hq or not lq:
            raise InputError("MUNIT-LQ needs images in both domains; the HQ or the LQ folder is empty.")
        self.hq, self.lq, self.crop, self.seed, self.length = hq, lq, int(crop), int(seed), int(length)

    def __len__(self) -> int:
        return self.length

    def _crop(self, img: np.ndarray, rng) -> torch.Tensor:
        c = self.crop
        h, w = img.shape
        if h < c or w < c:
            img = np.pad(img, ((0, max(0, c - h)), (0, max(0, c - w))), mode="reflect")
            h, w = img.shape
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        return torch.from_numpy(np.ascontiguousarray(img[y:y + c, x:x + c]))[None] * 2 - 1

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))
        a = self.hq[int(rng.integers(len(self.hq)))]
        b = self.lq[int(rng.integers(len(self.lq)))]
        return {"hq": self._crop(a, rng), "lq": self._crop(b, rng)}


def create_trainer(gen, dis, opt_g, opt_d, mcfg, cfg: MunitTrainConfig, device, rank: int = 0, world: int = 1):
    """The training ``Engine``: one step = discriminator update, then generator update (see module docstring)."""
    import ignite.distributed as idist
    from ignite.engine import Engine

    from dxr_core.models.munit import discriminator_loss, munit_losses

    def train_step(engine, batch):
        it = engine.state.iteration
        lr = mcfg.lr * 0.5 ** ((it - 1) // mcfg.lr_step)
        for opt in (opt_g, opt_d):
            for grp in opt.param_groups:
                grp["lr"] = lr
        gen.train()
        dis.train()
        x_a = batch["hq"].to(device, non_blocking=True)
        x_b = batch["lq"].to(device, non_blocking=True)
        g = torch.Generator().manual_seed(_iter_seed(cfg.seed, it, rank, 7))
        s_a = torch.randn(x_a.shape[0], mcfg.style_dim, generator=g).to(device)
        s_b = torch.randn(x_b.shape[0], mcfg.style_dim, generator=g).to(device)
        out = gen(x_a, x_b, s_a, s_b)
        # discriminators: real vs (detached) translations, one forward for both halves
        n = x_a.shape[0]
        la, lb = dis(torch.cat([x_a, out["x_ba"].detach()]), torch.cat([x_b, out["x_ab"].detach()]))
        loss_d = (discriminator_loss(mcfg, [o[:n] for o in la], [o[n:] for o in la])
                  + discriminator_loss(mcfg, [o[:n] for o in lb], [o[n:] for o in lb]))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generators
        fa, fb = dis(out["x_ba"], out["x_ab"])
        terms = munit_losses(mcfg, x_a, x_b, out, logits_ab=fb, logits_ba=fa)
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt_g.step()
        vals = torch.stack([loss_d.detach()] + [terms[k].detach() for k in LOG_KEYS[1:]])
        if world > 1:
            vals = idist.all_reduce(vals.clone()) / world
        return {k: float(v) for k, v in zip(LOG_KEYS, vals)} | {"lr": lr}

    return Engine(train_step)


LOG_KEYS = ("loss_d", "total", "adv_a", "adv_b", "recon_x_a", "recon_x_b", "recon_c_a", "recon_c_b", "recon_s_a",
            "recon_s_b", "recon_cyc", "struct")


def create_evaluator(translator_fn, val_hq: list[np.ndarray], val_lq: list[np.ndarray], seed: int = 0):
    """An ``Engine`` over the held-out HQ images: translates each with a fixed LQ style (seed + index) and, at the
    end, sets ``state.metrics``: spectrum distance (translated vs LQ, bicubic-free input vs LQ) and mean SSIM of each
    translation to its source (at the working grid)."""
    from ignite.engine import Engine, Events

    from dxr_core.metrics import ssim
    from dxr_core.metrics.domain import spectrum_distance

    def step(engine, i):
        src = val_hq[i]
        out = translator_fn(src, seed + i)
        return {"src": src, "out": out}

    ev = Engine(step)

    @ev.on(Events.EPOCH_STARTED)
    def _reset(engine):
        engine.state.pairs = []

    @ev.on(Events.ITERATION_COMPLETED)
    def _collect(engine):
        engine.state.pairs.append(engine.state.output)

    @ev.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        outs = [p["out"] for p in engine.state.pairs]
        srcs = [p["src"] for p in engine.state.pairs]
        size = min(min(x.shape) for x in outs + list(val_lq))
        engine.state.metrics = {
            "spectrum_to_lq": spectrum_distance(outs, val_lq, size=size)["distance"],
            "spectrum_hq_to_lq": spectrum_distance(srcs, val_lq, size=size)["distance"],
            "ssim_to_source": float(np.mean([ssim(o, s) for o, s in zip(outs, srcs)])),
        }

    return ev


def train_munit_lq(cfg: MunitTrainConfig) -> dict:
    """Train (or resume) a MUNIT-LQ run in ``cfg.out``. Returns the summary (also RUN/summary.json)."""
    from dxr_core.engines.launch import launch

    cfg.validate()
    cfg.model_config()  # unknown preset: OptionError before anything starts
    return launch(_training, cfg)


def _training(local_rank: int, cfg_dict: dict) -> None:  # noqa: C901 - one readable training script
    import copy

    import ignite.distributed as idist

    from dxr_core.engines.common import (attach_logging, checkpoint_and_resume, process_setup, record_start,
                                         run_iterations)
    from dxr_core.io.atomic import write_text_atomic
    from dxr_core.models.munit import MunitDiscriminators, MunitGenerators, MunitTranslator

    cfg = MunitTrainConfig(**cfg_dict)
    mcfg = cfg.model_config()
    rank, world, device = process_setup(cfg.threads)
    out = Path(cfg.out)

    # ---------------- data (whole images on the image_size grid, crops drawn per iteration)
    hq, hq_files = load_images(cfg.hq, mcfg.image_size, cfg.hq_manifest, cfg.hq_split if cfg.hq_manifest else None)
    lq, lq_files = load_images(cfg.lq, mcfg.image_size)
    if cfg.val_hq:
        val_hq, _ = load_images(cfg.val_hq, mcfg.image_size)
    elif cfg.hq_manifest:
        try:
            val_hq, _ = load_images(cfg.hq, mcfg.image_size, cfg.hq_manifest, "val")
        except InputError:
            val_hq = []
    else:
        val_hq = hq[: cfg.val_images]
    val_hq = val_hq[: cfg.val_images]
    val_lq = load_images(cfg.val_lq, mcfg.image_size)[0] if cfg.val_lq else lq
    dataset = UnpairedCrops(hq, lq, mcfg.crop, cfg.seed)

    # ---------------- networks / optimizers (identical initial weights on every rank)
    torch.manual_seed(cfg.seed)
    gen_net = MunitGenerators(mcfg)
    dis_net = MunitDiscriminators(mcfg)
    gen = idist.auto_model(gen_net)
    dis = idist.auto_model(dis_net)
    adam = dict(lr=mcfg.lr, betas=(mcfg.beta1, mcfg.beta2), weight_decay=mcfg.weight_decay)
    opt_g = idist.auto_optim(torch.optim.Adam(gen.parameters(), **adam))
    opt_d = idist.auto_optim(torch.optim.Adam(dis.parameters(), **adam))
    raw_gen = gen.module if hasattr(gen, "module") else gen

    trainer = create_trainer(gen, dis, opt_g, opt_d, mcfg, cfg, device, rank, world)
    to_save = {"trainer": trainer, "gen": gen, "dis": dis, "opt_g": opt_g, "opt_d": opt_d}
    start, last, checkpoint = checkpoint_and_resume(trainer, to_save, out, n_saved=cfg.n_saved,
                                                    every=cfg.ckpt_every, device=device, rank=rank)
    record_start(out, last is not None, start, cfg.iters, rank,
                 lambda prev: {"train_config": cfg_dict, "model_config": mcfg.to_dict(), "hq_files": len(hq_files),
                               "lq_files": len(lq_files), "val_hq": len(val_hq)})
    tb = attach_logging(trainer, out, start, rank,
                        row=lambda e: {**e.state.output, "seconds": round(prev_seconds + time.time() - wall0, 2)},
                        scalars=lambda o: {k: o[k] for k in LOG_KEYS},
                        bar=lambda o: {"G": o["total"], "D": o["loss_d"]},
                        log_every=cfg.log_every, progress=cfg.progress, other_logs=("val.jsonl",))

    wall0 = time.time()
    prev_seconds = 0.0  # wall time of earlier starts, from the log (kept up to the resumed iteration)
    if rank == 0 and start > 0:
        rows = read_munit_log(out)
        prev_seconds = float(rows[-1].get("seconds", 0.0)) if rows else 0.0

    def translator() -> MunitTranslator:
        meta = {"iteration": trainer.state.iteration, "preset": cfg.preset, "seed": cfg.seed,
                "hq": str(cfg.hq), "lq": str(cfg.lq), "hq_manifest": cfg.hq_manifest, "hq_split": cfg.hq_split,
                "hq_images": len(hq_files), "lq_images": len(lq_files),
                "train_seconds": prev_seconds + time.time() - wall0}
        return MunitTranslator(copy.deepcopy(raw_gen).cpu(), mcfg, meta)

    best: dict = {}
    if rank == 0 and start > 0 and (out / "val.jsonl").is_file():  # the best of the earlier starts
        for line in (out / "val.jsonl").read_text().splitlines():
            m = json.loads(line)
            if m["iteration"] <= start and m["ssim_to_source"] >= cfg.best_ssim_floor and \
                    m["spectrum_to_lq"] < best.get("spectrum_to_lq", float("inf")):
                best = m

    def validate(engine):
        if rank == 0:
            tr = translator()
            metrics = {}
            if val_hq:
                ev = create_evaluator(lambda img, s: tr.translate(img, seed=s), val_hq, val_lq[:64], seed=cfg.seed)
                ev.run(list(range(len(val_hq))), max_epochs=1)
                metrics = {"iteration": engine.state.iteration, **ev.state.metrics}
                with open(out / "val.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if tb is not None:
                    for k, v in ev.state.metrics.items():
                        tb.writer.add_scalar(f"val/{k}", v, engine.state.iteration)
                print(f"[val it {engine.state.iteration}] spectrum distance to LQ {metrics['spectrum_to_lq']:.3f} "
                      f"(HQ as is {metrics['spectrum_hq_to_lq']:.3f}), SSIM to source "
                      f"{metrics['ssim_to_source']:.3f}", flush=True)
            tr.meta["val"] = metrics
            tr.save(out / "model.pt")
            # GAN training oscillates: keep the translator closest to the LQ spectrum among those that keep the
            # content (SSIM to source >= best_ssim_floor)
            if metrics and metrics["ssim_to_source"] >= cfg.best_ssim_floor and \
                    metrics["spectrum_to_lq"] < best.get("spectrum_to_lq", float("inf")):
                best.update(metrics)
                tr.save(out / "model_best.pt")
        if world > 1:
            idist.barrier()

    run_iterations(trainer, dataset, batch_size=mcfg.batch_size, start=start, iters=cfg.iters,
                   resumed=last is not None, rank=rank, world=world, validate=validate, val_every=cfg.val_every,
                   checkpoint=checkpoint, stop_at=cfg.stop_at)
    if tb is not None:
        tb.close()
    if rank == 0:
        done = trainer.state.iteration
        summary = {"iterations": done, "completed": done >= cfg.iters, "seconds": time.time() - wall0,
                   "train_seconds": prev_seconds + time.time() - wall0, "model": str(out / "model.pt"),
                   "preset": cfg.preset, "model_config": mcfg.to_dict(), "world_size": world}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    if world > 1:
        idist.barrier()


def read_munit_log(run: str | os.PathLike) -> list[dict]:
    """The per-iteration log of a run (``RUN/loss.jsonl``)."""
    from dxr_core.engines.common import read_log

    return read_log(run)


def evaluate_munit_lq(model, hq_images: list[np.ndarray], drr_refs: list[np.ndarray], seed: int = 0,
                      grid: int = 256, methods: tuple[str, ...] = ("bicubic", "high_order", "acquisition")) -> dict:
    """Domain gap to real DRRs of held-out HQ radiographs made LQ by MUNIT-LQ and by other ``degrade`` methods.

    Every HQ image is put on a ``grid`` x ``grid`` square (:func:`dxr_core.metrics.domain.prepare`) and made LQ at
    half size (``grid/2``) by each method (MUNIT-LQ: style from the prior, seed ``seed + i``); the DRR references are
    put on the same LQ grid. Per set: spectrum distance, histogram distance and classifier two-sample test accuracy
    against the DRRs (:func:`dxr_core.metrics.domain.domain_gap`), and the mean SSIM of each LQ image to its HQ
    source resized to the LQ grid (area averaging): the content that is kept.
    """
    from dxr_core.degrade.evaluate import evaluate_lq_methods
    from dxr_core.models.munit import MunitTranslator

    tr = model if isinstance(model, MunitTranslator) else MunitTranslator.load(model)
    lq_grid = grid // 2
    rows = {m: (m, {}) for m in methods}
    rows["munit (style ~ N(0, I))"] = lambda x, i: tr.translate(x, seed=seed + i, size=grid,
                                                               out_shape=(lq_grid, lq_grid))
    res = evaluate_lq_methods(hq_images, drr_refs, rows, seed=seed, grid=grid)
    res["model_iteration"] = tr.meta.get("iteration")
    return res


def format_munit_eval(res: dict) -> str:
    from dxr_core.degrade.evaluate import format_lq_table

    return format_lq_table(res, f"MUNIT-LQ iteration {res.get('model_iteration')}")
