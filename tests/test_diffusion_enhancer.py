"""DDPM-HQ end to end: a tiny model really learns (beats bicubic on held-out images), tiling agrees with untiled
inference, `dxr enhance` keeps the format (DICOM tags, new spacing), `dxr evaluate` reports, errors are clear."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from conftest import run_dxr
from dxr_core.data import make_pair, write_image, write_pairs
from dxr_core.diffusion import Enhancer, load_enhancer
from dxr_core.engines import TrainConfig, train_ddpm_hq
from dxr_core.errors import ModelError
from dxr_core.metrics import psnr

TRAIN_ITERS = 500


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny preset on synthetic pairs (single thread: fastest on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("ddpm")
    pairs = write_pairs(root / "pairs", n=24, size=128, scale=2, seed=1)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = train_ddpm_hq(TrainConfig(pairs=str(pairs), out=str(root / "run"), preset="tiny", iters=TRAIN_ITERS,
                                        batch_size=16, crop=48, lr=2e-3, val_every=10 ** 6, val_images=2,
                                        ckpt_every=10 ** 6, progress=False, threads=1))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    torch.set_num_threads(1)
    yield {"root": root, "run": root / "run", "summary": summary, "seconds": seconds, "cpu": cpu,
           "enh": load_enhancer(root / "run" / "model.pt")}
    torch.set_num_threads(threads)


def test_real_learning_beats_bicubic(trained):
    assert trained["summary"]["iterations"] == TRAIN_ITERS
    # The budget (<= 2 min of CPU) is reported, never asserted: timings on the shared machines drift by 2x+
    # (115 s on a quiet core, 153 s in CI, 230 s beside another job). Fewer or smaller steps do not beat bicubic.
    print(f"training: {trained['cpu']:.0f} s CPU, {trained['seconds']:.0f} s wall")
    enh: Enhancer = trained["enh"]
    ddim, dpmpp, bic = [], [], []
    for k in range(6):  # held out: seeds never used for training
        lq, hq = make_pair(128, 2, seed=900_000 + k)
        cond = torch.nn.functional.interpolate(torch.from_numpy(lq)[None, None], size=hq.shape, mode="bicubic",
                                               align_corners=False)[0, 0].clamp(0, 1).numpy()
        bic.append(psnr(cond, hq))
        ddim.append(psnr(enh.enhance(lq, scale=2, sampler="ddim", steps=10, seed=k, tile=None), hq))
        dpmpp.append(psnr(enh.enhance(lq, scale=2, sampler="dpmpp", steps=10, seed=k, tile=None), hq))
    print(f"held-out PSNR: ddim-10 {np.mean(ddim):.2f} dB, dpmpp-10 {np.mean(dpmpp):.2f} dB, "
          f"bicubic {np.mean(bic):.2f} dB")
    assert np.mean(ddim) > np.mean(bic) + 0.2
    assert np.mean(dpmpp) > np.mean(bic)


def test_tiled_matches_untiled(trained):
    enh: Enhancer = trained["enh"]
    lq, _ = make_pair(160, 2, seed=424242)
    lq = lq[:, :64]  # 80 x 64 LQ -> 160 x 128 output: several tiles of at most 64 px
    full = enh.enhance(lq, 2, "dpmpp", 10, seed=3, tile=None)
    tiled = enh.enhance(lq, 2, "dpmpp", 10, seed=3, tile=64, overlap=24, tile_batch=3)
    assert full.shape == tiled.shape == (160, 128)
    assert psnr(tiled, full) >= 40.0, psnr(tiled, full)
    again = enh.enhance(lq, 2, "dpmpp", 10, seed=3, tile=64, overlap=24, tile_batch=3)
    assert np.array_equal(again, tiled)  # deterministic for a seed
    other = enh.enhance(lq, 2, "ddim", 5, seed=4, tile=None, eta=1.0)
    assert not np.array_equal(other, full)


def test_any_size_and_batch(trained):
    enh: Enhancer = trained["enh"]
    lq = np.random.default_rng(0).random((37, 23)).astype(np.float32)
    out = enh.enhance(lq, scale=2, steps=3, tile=32, overlap=8)
    assert out.shape == (74, 46) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    batch = enh.enhance_tensor(torch.from_numpy(lq)[None, None].repeat(2, 1, 1, 1), scale=1.0, steps=3, seed=[5, 6])
    single = enh.enhance(lq, scale=1.0, steps=3, seed=6)
    assert batch.shape == (2, 1, 37, 23)
    assert np.allclose(batch[1, 0].numpy(), single, atol=1e-5)


def test_model_default_sampling(trained, tmp_path):
    """A model may carry its own sampler / steps (meta "sampling"): used wherever none is given, CLI included."""
    enh = trained["enh"]
    assert enh.default_sampling == ("ddim", 10) and enh.evaluations() == 10  # no meta: the package defaults
    meta = {**enh.meta, "sampling": {"sampler": "ddim", "steps": 1}}
    one = Enhancer(enh.model, enh.model_config, enh.diffusion, meta)
    assert one.default_sampling == ("ddim", 1) and one.evaluations() == 1 and one.evaluations("ddim", 4) == 4
    lq = make_pair(64, 2, seed=9)[0]
    np.testing.assert_array_equal(one.enhance(lq, seed=2), one.enhance(lq, sampler="ddim", steps=1, seed=2))
    assert not np.array_equal(one.enhance(lq, seed=2), one.enhance(lq, steps=4, seed=2))
    one.save(tmp_path / "one.pt")
    write_image(lq, tmp_path / "in" / "a.png")
    proc = run_dxr("enhance", tmp_path / "in", "--out", tmp_path / "out", "--model", tmp_path / "one.pt")
    assert proc.returncode == 0, proc.stderr
    from dxr_core.io import read_radiograph

    got = read_radiograph(tmp_path / "out" / "a.png")[0]
    assert np.abs(got - one.enhance(lq, seed=0)).max() < 2 / 65535  # 16-bit PNG of the 1-step result


def test_temperature(trained, tmp_path):
    """Temperature scales the initial noise: at 0 a deterministic sampler ignores the seed (the mean estimate), at 1
    it does not; a model's meta default applies wherever none is given; out-of-range values are refused first."""
    from dxr_core.errors import OptionError

    enh = trained["enh"]
    lq = make_pair(64, 2, seed=9)[0]
    assert enh.default_temperature == 1.0
    cold = [enh.enhance(lq, steps=2, seed=s, temperature=0.0) for s in (1, 2)]
    np.testing.assert_array_equal(cold[0], cold[1])
    assert not np.array_equal(enh.enhance(lq, steps=2, seed=1), enh.enhance(lq, steps=2, seed=2))
    meta = {**enh.meta, "sampling": {"sampler": "ddim", "steps": 2, "temperature": 0.0}}
    cool = Enhancer(enh.model, enh.model_config, enh.diffusion, meta)
    np.testing.assert_array_equal(cool.enhance(lq, seed=5), cold[0])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(OptionError, match="temperature"):
            enh.enhance(lq, temperature=bad)
    write_image(lq, tmp_path / "in" / "a.png")
    proc = run_dxr("enhance", tmp_path / "in", "--out", tmp_path / "out", "--model", trained["run"] / "model.pt",
                   "--temperature", "2")
    assert proc.returncode != 0 and "temperature" in proc.stderr and not (tmp_path / "out" / "a.png").exists()


def test_cli_enhance_formats_and_evaluate(trained, tmp_path):
    import pydicom

    from dxr_core.io import read_radiograph, write_radiograph

    model = trained["run"] / "model.pt"
    src = tmp_path / "in"
    lq, hq = make_pair(96, 2, seed=5)
    write_image(lq, src / "a.png")
    write_radiograph(lq, (0.4, 0.4), src / "b.nrrd")
    write_radiograph(lq, (0.4, 0.5), src / "c.dcm",
                     template_meta={"dicom": {"PatientID": "DXR-TEST-7", "PatientName": "Test^Enhance"}})
    out = tmp_path / "out"
    proc = run_dxr("enhance", src, "--out", out, "--model", model, "--steps", "4", "--tile", "64", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    for name in ("a.png", "b.nrrd", "c.dcm"):
        img, spacing, meta = read_radiograph(out / name)
        assert img.shape == (96, 96)
    _, sp_nrrd, _ = read_radiograph(out / "b.nrrd")
    assert np.allclose(sp_nrrd, (0.2, 0.2), atol=1e-6)
    ds = pydicom.dcmread(out / "c.dcm")
    assert ds.PatientID == "DXR-TEST-7" and ds.Rows == 96 and ds.Columns == 96
    _, sp_dcm, _ = read_radiograph(out / "c.dcm")
    assert np.allclose(sp_dcm, (0.2, 0.25), atol=1e-6)
    # same seed, same output
    out2 = tmp_path / "out2"
    assert run_dxr("enhance", src / "a.png", "--out", out2, "--model", model, "--steps", "4", "--tile", "64",
                   "--seed", "1").returncode == 0
    assert np.array_equal(read_radiograph(out / "a.png")[0], read_radiograph(out2 / "a.png")[0])
    # evaluate against the HQ truth
    ref = tmp_path / "ref"
    write_image(hq, ref / "a.png")
    mask = np.zeros_like(hq)
    mask[20:80, 10:50] = 1
    write_image(mask, tmp_path / "mask.png")
    ev = run_dxr("evaluate", "--pred", out, "--ref", ref, "--lung-mask", tmp_path / "mask.png",
                 "--json", tmp_path / "m.json")
    assert ev.returncode == 0, ev.stderr
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["count"] == 1 and {"psnr", "ssim", "ms_ssim", "psnr_lung", "ssim_lung", "ms_ssim_lung"} <= set(
        res["mean"])
    assert "psnr" in ev.stdout and "mean" in ev.stdout


def test_model_errors(tmp_path, monkeypatch):
    import dxr_core.diffusion.enhancer as enh_mod

    monkeypatch.setattr(enh_mod, "DEFAULT_WEIGHTS", tmp_path / "none.pt")
    with pytest.raises(ModelError, match="no DDPM-HQ weights"):
        load_enhancer()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        load_enhancer(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a DDPM-HQ"):
        load_enhancer(tmp_path / "other.pt")
    write_image(np.zeros((16, 16), np.float32), tmp_path / "x.png")
    proc = run_dxr("enhance", tmp_path / "x.png", "--out", tmp_path / "o", "--model", tmp_path / "missing.pt")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "checkpoint" in proc.stderr
    proc = run_dxr("enhance", tmp_path / "x.png", "--out", tmp_path / "o", "--sampler", "euler")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
