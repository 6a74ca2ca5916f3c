"""Inference in worker processes, so the server's event loop always answers.

MONAI Label 0.8.5 runs ``/infer`` inside an ``async`` handler that calls the task synchronously: while one
enhancement runs, every other request (``/info`` included) waits. Here each request is a job for a pool of
``--conf workers`` processes (``pebble.ProcessPool``: unlike ``concurrent.futures.ProcessPoolExecutor`` it can stop
one running job by replacing its worker, which is what ``--conf max_seconds`` needs). Each worker builds the two
inference tasks once (its own model cache and CT cache) and runs jobs one at a time. At most
``workers + max_queue`` jobs are admitted; the next one is refused with :class:`QueueFull` (503).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future
from typing import Any, Dict, Tuple

logger = logging.getLogger(__name__)

_TASKS: Dict[str, Any] = {}  # in each worker process: task name -> inference task


class QueueFull(RuntimeError):
    """Every worker is busy and the waiting line is full."""


def _init_worker(cfg_dict: Dict[str, Any], tmp_dir: str) -> None:
    """Worker start-up: the tasks and their caches, results written under the app's private temporary folder."""
    import tempfile

    from lib.configs import AppConfig
    from lib.infers import DRRTask, EnhanceTask
    from lib.infers.common import CTCache

    tempfile.tempdir = tmp_dir  # result files and reader scratch stay inside the app's folders
    cfg = AppConfig.from_dict(cfg_dict)
    cache = CTCache(cfg.ct_cache)
    _TASKS["drr"] = DRRTask(cfg, cache)
    _TASKS["drr_enhance"] = EnhanceTask(cfg, cache)


def _run_job(task: str, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """In a worker: run one validated request; returns (result file, result JSON). dxr_core errors travel back."""
    from lib.infers.common import release_memory

    try:
        return _TASKS[task](request)
    finally:
        release_memory()


def _warm_up() -> int:
    return os.getpid()


class InferencePool:
    """``workers`` processes; :meth:`submit` returns a future (``concurrent.futures`` API)."""

    def __init__(self, cfg_dict: Dict[str, Any], tmp_dir: str, workers: int = 1, max_queue: int = 8):
        from pebble import ProcessPool

        self.workers, self.max_queue = int(workers), int(max_queue)
        self._pool = ProcessPool(max_workers=self.workers, initializer=_init_worker, initargs=(cfg_dict, tmp_dir),
                                 context=multiprocessing.get_context("spawn"))
        self._lock = threading.Lock()
        self._admitted = 0
        for _ in range(self.workers):  # start the workers now: the first request should not pay for imports
            self._pool.schedule(_warm_up)

    @property
    def admitted(self) -> int:
        return self._admitted

    def submit(self, task: str, request: Dict[str, Any], timeout: float) -> Future:
        with self._lock:
            if self._admitted >= self.workers + self.max_queue:
                raise QueueFull(f"All {self.workers} inference worker(s) are busy and {self.max_queue} request(s) "
                                "are already waiting; retry in a moment (or start the server with more --conf workers "
                                "or a longer --conf max_queue).")
            self._admitted += 1
        try:
            future = self._pool.schedule(_run_job, args=(task, request), timeout=timeout)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _f: self._release())
        return future

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
