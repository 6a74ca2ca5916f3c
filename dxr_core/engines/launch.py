"""One way every trainer starts: a single process, processes spawned here (``nproc_per_node`` with a backend), or
processes started by ``torchrun`` (``WORLD_SIZE`` set: the backend defaults to nccl on GPUs, gloo on CPUs)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable


def launch(training: Callable[[int, dict], None], cfg: Any) -> dict:
    """Run ``training(local_rank, asdict(cfg))`` under ``ignite.distributed.Parallel``; ``cfg`` has ``out``,
    ``backend`` and ``nproc_per_node``. Returns ``cfg.out/summary.json`` (written by rank 0), or {}."""
    import ignite.distributed as idist
    import torch

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if cfg.backend is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        cfg.backend = "nccl" if torch.cuda.is_available() else "gloo"
    kwargs = {}
    if cfg.backend is not None and cfg.nproc_per_node and "WORLD_SIZE" not in os.environ:
        kwargs["nproc_per_node"] = int(cfg.nproc_per_node)
    with idist.Parallel(backend=cfg.backend, **kwargs) as parallel:
        parallel.run(training, asdict(cfg))
    summary = Path(cfg.out) / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}
