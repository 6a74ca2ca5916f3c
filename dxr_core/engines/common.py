"""Pieces every training engine shares (DDPM-HQ, DDPM-LQ, MUNIT-LQ), in the manner of Ignite's
``examples/cifar10``: an Ignite ``Checkpoint`` (atomic ``DiskSaver``) every N iterations and at the end, exact
resume from the newest checkpoint (``torch.load(weights_only=True)``), a ``run.json`` recording every start, and
rank-0 logging (``loss.jsonl``, TensorBoard, ``ProgressBar``).

Ignite's ``common.setup_common_training_handlers`` is not used as is: it resumes nothing and saves by epoch, while
these runs are one long epoch whose checkpoints must land on iteration numbers (the batch and the noise of
iteration ``it`` are functions of (seed, it, rank), so a resumed run continues the very same loss curve).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["process_setup", "latest_checkpoint", "truncate_log", "checkpoint_and_resume", "record_start",
           "attach_logging", "run_iterations", "read_log"]


def process_setup(threads: int | None):
    """(rank, world size, device) of this process under ``ignite.distributed``; CPU threads: ``threads``, or the
    cores shared out between the processes of a multi-process CPU run."""
    import os

    import ignite.distributed as idist
    import torch

    rank, world = idist.get_rank(), idist.get_world_size()
    device = idist.device()
    if threads:
        torch.set_num_threads(int(threads))
    elif device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    return rank, world, device


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest ``train_checkpoint_<iteration>.pt`` in ``ckpt_dir`` (None when there is none)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    cands = []
    for p in ckpt_dir.glob("train_checkpoint_*.pt"):
        try:
            cands.append((int(p.stem.rsplit("_", 1)[1]), p))
        except ValueError:
            continue
    return max(cands)[1] if cands else None


def truncate_log(path: Path, start: int) -> None:
    """Drop log lines past the resumed iteration (a killed run may have logged beyond its last checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= start:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    from dxr_core.io.atomic import write_text_atomic

    write_text_atomic(path, "".join(line + "\n" for line in keep))


def checkpoint_and_resume(trainer, to_save: Mapping[str, Any], out: Path, *, n_saved: int, every: int, device,
                          rank: int):
    """Attach an Ignite ``Checkpoint`` of ``to_save`` to ``trainer`` (every ``every`` iterations and at the end,
    into ``out/checkpoints``) and load the newest one if any. Returns (start iteration, checkpoint file loaded or
    None, the ``Checkpoint`` handler: call it to save now)."""
    import torch
    from ignite.engine import Events
    from ignite.handlers import Checkpoint, DiskSaver

    ckpt_dir = Path(out) / "checkpoints"
    checkpoint = Checkpoint(dict(to_save), DiskSaver(str(ckpt_dir), require_empty=False, atomic=True),
                            filename_prefix="train", n_saved=n_saved,
                            global_step_transform=lambda e, _: e.state.iteration)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every) | Events.COMPLETED, checkpoint)
    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return 0, None, checkpoint
    state = torch.load(last, map_location=device, weights_only=True)
    Checkpoint.load_objects(to_load=dict(to_save), checkpoint=state)
    start = trainer.state.iteration
    if rank == 0:
        print(f"resuming {out} from iteration {start} ({last.name})", flush=True)
    return start, last, checkpoint


def record_start(out: Path, resumed: bool, start: int, iters: int, rank: int,
                 payload: Callable[[dict], dict]) -> dict:
    """Append this start to ``out/run.json`` (rank 0) and return the previous record ({} for a fresh run).
    ``payload(previous) -> dict``: the run's set-up to store beside ``starts``."""
    from dxr_core.io.atomic import write_text_atomic

    meta_path = Path(out) / "run.json"
    prev = json.loads(meta_path.read_text()) if resumed and meta_path.is_file() else {}
    if rank == 0:
        starts = list(prev.get("starts", []))
        starts.append({"from_iteration": start, "iters": iters, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_text_atomic(meta_path, json.dumps({**payload(prev), "starts": starts}, indent=2))
    return prev


def attach_logging(trainer, out: Path, start: int, rank: int, *, row: Callable[[Any], dict],
                   scalars: Callable[[dict], dict], bar: Callable[[dict], dict], log_every: int, progress: bool,
                   other_logs: tuple[str, ...] = ()):
    """Rank 0: one JSON line per iteration in ``out/loss.jsonl`` (``row(engine)``), TensorBoard scalars every
    ``log_every`` iterations (``scalars(output)``) and, with ``progress``, a ``ProgressBar`` (``bar(output)``).
    Logs (and ``other_logs``) are cut back to the resumed iteration first. Returns the TensorBoard logger (or None
    on other ranks); close it when training ends."""
    if rank != 0:
        return None
    from ignite.engine import Events
    from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

    out = Path(out)
    log_path = out / "loss.jsonl"
    for name in ("loss.jsonl", *other_logs):
        truncate_log(out / name, start)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _log(engine):
        with open(log_path, "a") as f:
            f.write(json.dumps({"iteration": engine.state.iteration, **row(engine)}) + "\n")

    tb = TensorboardLogger(log_dir=str(out / "tb"))
    tb.attach(trainer, OutputHandler(tag="train", output_transform=scalars),
              event_name=Events.ITERATION_COMPLETED(every=max(1, log_every)))
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=bar)
    return tb


def run_iterations(trainer, dataset, *, batch_size: int, start: int, iters: int, resumed: bool, rank: int,
                   world: int, validate: Callable, val_every: int, checkpoint, stop_at: int | None = None,
                   num_workers: int = 0, pin_memory: bool = False) -> None:
    """Validate every ``val_every`` iterations and at the end, stop (as if killed, checkpoint kept) after
    ``stop_at`` when given, and run iterations ``start + 1 .. iters`` as one epoch whose batches come from
    ``IterationSampler`` (a batch is a function of its iteration, so a resumed run sees the same data)."""
    import torch
    from ignite.engine import Events

    from dxr_core.data.pairs import IterationSampler

    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=val_every), validate)

    @trainer.on(Events.COMPLETED)
    def _final(engine):
        if engine.state.iteration % val_every != 0:
            validate(engine)

    if stop_at is not None:
        @trainer.on(Events.ITERATION_COMPLETED(once=int(stop_at)))
        def _stop(engine):
            checkpoint(engine)
            engine.terminate()

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers,
        sampler=IterationSampler(start, iters, batch_size, rank, world), pin_memory=pin_memory,
        persistent_workers=False)
    if start >= iters:
        return
    if resumed and trainer.state.epoch_length != iters:
        # a longer plan than the original run: one epoch of ``iters``, resumed inside it (Ignite would otherwise
        # see a finished epoch and start a new run from iteration 0)
        trainer.state.epoch_length = iters
        trainer.state.epoch = trainer.state.iteration // iters
    trainer.run(loader, max_epochs=1, epoch_length=iters)


def read_log(run, name: str = "loss.jsonl") -> list[dict]:
    """The JSON lines of ``run/name`` ([] when there is no log yet)."""
    p = Path(run) / name
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []

