"""Ignite trainer: exact resume after a hard kill (same loss curve), gloo with 2 processes, options and logs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_dxr
from dxr_core.data import write_pairs
from dxr_core.diffusion import load_enhancer
from dxr_core.engines import TrainConfig, read_loss_log, train_ddpm_hq
from dxr_core.errors import InputError, OptionError

ARGS = dict(preset="tiny", batch_size=2, crop=32, lr=1e-3, val_every=10 ** 6, val_images=1, progress=False,
            threads=1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "p", n=6, size=64, scale=2, seed=3)


def test_resume_after_kill_continues_same_loss_curve(pairs, tmp_path):
    iters = 30
    ref = tmp_path / "ref"
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(ref), iters=iters, ckpt_every=5, **ARGS))
    ref_loss = [r["loss"] for r in read_loss_log(ref)]
    assert len(ref_loss) == iters

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dxr_core.cli", "train", "ddpm-hq", "--pairs", str(pairs), "--out", str(run),
           "--preset", "tiny", "--iters", str(iters), "--batch-size", "2", "--crop", "32", "--lr", "1e-3",
           "--val-every", "1000000", "--ckpt-every", "5", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = run / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.rsplit("_", 1)[1]) >= 10 for p in ckpts.glob("train_checkpoint_*.pt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = read_loss_log(run)
    assert 10 <= len(logged) < iters
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout
    losses = read_loss_log(run)
    assert [r["iteration"] for r in losses] == list(range(1, iters + 1))
    assert [r["loss"] for r in losses] == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
    a = torch.load(ref / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (run / "tb").is_dir() and any((run / "tb").iterdir())
    # a finished run extended with a longer plan continues its iteration count
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(ref), iters=iters + 3, ckpt_every=5, **ARGS))
    assert [r["iteration"] for r in read_loss_log(ref)] == list(range(1, iters + 4))
    assert load_enhancer(ref).meta["iteration"] == iters + 3


def test_gloo_two_processes(pairs, tmp_path):
    out = tmp_path / "ddp"
    summary = train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(out), iters=6, ckpt_every=3, backend="gloo",
                                        nproc_per_node=2, **ARGS))
    assert summary["world_size"] == 2 and summary["completed"] and summary["iterations"] == 6
    enh = load_enhancer(out)
    assert enh.meta["iteration"] == 6
    assert len(read_loss_log(out)) == 6


def test_options_and_inputs(pairs, tmp_path):
    with pytest.raises(OptionError):
        train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "x"), iters=0))
    with pytest.raises(InputError, match="lq/ and hq/"):
        train_ddpm_hq(TrainConfig(pairs=str(tmp_path), out=str(tmp_path / "y"), iters=2, **ARGS))
    proc = run_dxr("train", "ddpm-hq", "--pairs", pairs, "--out", tmp_path / "z", "--preset", "huge", "--iters", "1")
    assert proc.returncode == 2 and "preset" in proc.stderr and "Traceback" not in proc.stderr
    for bad in ((0.5, 0.2), (-0.1, 1.0), (0.0, 1.5)):
        with pytest.raises(OptionError, match="t-range"):
            train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "t"), iters=1, t_range=bad, **ARGS))
    proc = run_dxr("train", "ddpm-hq", "--pairs", pairs, "--out", tmp_path / "w", "--t-range", "0.9", "--iters", "1")
    assert proc.returncode == 2 and "--t-range" in proc.stderr and "Traceback" not in proc.stderr


def test_t_range_trains_the_few_step_regime(pairs, tmp_path):
    """--t-range moves the trained timesteps (same seeds, same weights: only t differs, so the losses differ) and is
    recorded in the model."""
    args = dict(ARGS, lr=0.0)
    hi = train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "hi"), iters=12, t_range=(0.9, 1.0), **args))
    lo = train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "lo"), iters=12, t_range=(0.0, 0.1), **args))
    assert hi and lo
    loss = {k: sum(r["loss"] for r in read_loss_log(tmp_path / k)) for k in ("hi", "lo")}
    assert loss["hi"] != loss["lo"]
    assert list(load_enhancer(tmp_path / "hi").meta["train_config"]["t_range"]) == [0.9, 1.0]
    # a model of the top timesteps only defaults to one DDIM step; one of all timesteps keeps the library's default
    from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

    assert load_enhancer(tmp_path / "hi").default_sampling == ("ddim", 1)
    assert load_enhancer(tmp_path / "lo").default_sampling == (DEFAULT_SAMPLER, DEFAULT_STEPS)


def test_init_from_checkpoint(pairs, tmp_path):
    a = tmp_path / "a"
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(a), iters=3, ckpt_every=3, **ARGS))
    args = dict(ARGS, lr=0.0)
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "b"), iters=2, ckpt_every=2,
                              init=str(a / "model.pt"), **args))
    ea, eb = load_enhancer(a), load_enhancer(tmp_path / "b")
    assert eb.diffusion == ea.diffusion and eb.meta["init"] == str(a / "model.pt")
    sa, sb = ea.model.state_dict(), eb.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli_init_fine_tunes_the_shipped_weights(pairs, tmp_path):
    """`dxr train ddpm-hq --init shipped` keeps the shipped network and diffusion set-up; a bad path is one line."""
    from dxr_core.diffusion import DEFAULT_WEIGHTS

    bad = run_dxr("train", "ddpm-hq", "--pairs", pairs, "--out", tmp_path / "bad", "--init", tmp_path / "no.pt")
    assert bad.returncode == 2 and "--init" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "model.pt").exists()
    out = tmp_path / "ft"
    run_dxr("train", "ddpm-hq", "--pairs", pairs, "--out", out, "--init", "shipped", "--iters", "1",
            "--batch-size", "1", "--crop", "16", "--val-every", "1000000", "--no-progress", check=True)
    shipped, tuned = load_enhancer(DEFAULT_WEIGHTS), load_enhancer(out)
    assert tuned.meta["init"] == str(DEFAULT_WEIGHTS) and tuned.diffusion == shipped.diffusion
    assert tuned.model_config == shipped.model_config


def test_cosine_lr_schedule_resumes_on_its_curve(pairs, tmp_path):
    """--lr-schedule cosine: the logged lr falls from --lr to --lr/100 over --iters, and a run stopped mid-way and
    resumed continues the same lr and loss curve (the scheduler's position is in the checkpoint)."""
    args = dict(ARGS, iters=12, ckpt_every=3, lr_schedule="cosine")
    full = train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "full"), **args))
    assert full["completed"]
    rows = read_loss_log(tmp_path / "full")
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < 1e-4 and lrs[-1] >= 1e-5
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "const"), **dict(args, lr_schedule="constant")))
    const = read_loss_log(tmp_path / "const")
    assert {r["lr"] for r in const} == {1e-3}
    cut = tmp_path / "cut"
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(cut), stop_at=6, **args))
    assert len(read_loss_log(cut)) == 6
    train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(cut), **args))
    resumed = read_loss_log(cut)
    assert [r["lr"] for r in resumed] == pytest.approx(lrs, rel=1e-9)
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in rows], rel=1e-5, abs=1e-7)
    with pytest.raises(OptionError, match="lr-schedule"):
        train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(tmp_path / "bad"), **dict(args, lr_schedule="step")))
