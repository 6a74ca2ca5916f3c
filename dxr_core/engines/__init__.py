"""dxr_core.engines: PyTorch-Ignite trainers (DDPM-HQ conditional enhancer, DDPM-LQ, MUNIT-LQ), resumable and
distributed; the pieces they share are in :mod:`dxr_core.engines.common`.

Exports resolve lazily, so ``dxr --help`` (which imports ``dxr_core.engines.commands``) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "dxr_core.engines.ddpm_hq", "estimate_residual_scale": "dxr_core.engines.ddpm_hq",
    "read_loss_log": "dxr_core.engines.ddpm_hq", "train_ddpm_hq": "dxr_core.engines.ddpm_hq",
    "MunitTrainConfig": "dxr_core.engines.munit_lq", "train_munit_lq": "dxr_core.engines.munit_lq",
    "read_munit_log": "dxr_core.engines.munit_lq", "UnpairedCrops": "dxr_core.engines.munit_lq",
    "LQTrainConfig": "dxr_core.engines.ddpm_lq", "train_ddpm_lq": "dxr_core.engines.ddpm_lq",
    "prepare_lq_images": "dxr_core.engines.ddpm_lq",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dxr_core.engines' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
