"""Shared pytest fixtures: the `dxr` executable, tool lookup, and small-thread defaults for a 2-core machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def dxr_cmd() -> list[str]:
    """Command prefix that runs the real `dxr` CLI in a subprocess (same interpreter as the tests)."""
    return [sys.executable, "-m", "dxr_core.cli"]


def run_dxr(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `dxr ARGS...` as a user would; returns the completed process (text output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dxr_core.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dxr {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def require_tool(name: str) -> str:
    """Path of a system tool that scripts/setup installs; skip (with the reason) where it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup installs it with apt-get as root)")
    return path


@pytest.fixture(scope="session")
def tiny_ddpm_hq_model(tmp_path_factory) -> Path:
    """A randomly initialised 'tiny' DDPM-HQ checkpoint in the enhancer's own format (for plumbing tests of servers)."""
    import torch

    from dxr_core.diffusion.enhancer import Enhancer
    from dxr_core.diffusion.schedule import DiffusionConfig
    from dxr_core.models import build_model, get_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    Enhancer(build_model("tiny"), get_config("tiny"), DiffusionConfig(num_train_timesteps=100)).save(path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def unpaired_domains(tmp_path_factory) -> tuple[Path, Path]:
    """HQ: the 8 committed real radiographs (tests/data/real_cxr_sample, 64 px). LQ: blurred, mirrored copies of
    them in another tone (a DRR-like look; unpaired in practice). For the LQ-synthesis trainings (MUNIT-LQ, DDPM-LQ)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from dxr_core.data.pairs import write_image
    from dxr_core.data.radiographs import list_radiographs, load_radiograph, resize_radiograph

    root = tmp_path_factory.mktemp("unpaired")
    hq, lq = root / "hq", root / "lq"
    for f in list_radiographs(ROOT / "tests" / "data" / "real_cxr_sample"):
        img = resize_radiograph(load_radiograph(f)[0], 64)
        write_image(img, hq / f"{f.stem}.png")
        # another tone as well (a DRR's processing curve differs from a radiograph's): brighter, lower contrast
        write_image(np.clip(0.25 + 0.6 * gaussian_filter(img[:, ::-1], 2.0) ** 1.5, 0, 1), lq / f"{f.stem}.png")
    return hq, lq

