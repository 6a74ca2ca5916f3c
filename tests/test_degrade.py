"""dxr_core.degrade: one interface, seeded methods, measurable blur/noise, and `dxr degrade` end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxr_core.cli import main
from dxr_core.data.synthetic import make_hq
from dxr_core.degrade import METHODS, degrade, method_options
from dxr_core.degrade.high_order import gaussian_kernel
from dxr_core.errors import InputError, ModelError, OptionError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "real_cxr_sample"
WORKING = ("bicubic", "area", "high_order", "acquisition")


@pytest.fixture(scope="module")
def hq() -> np.ndarray:
    return make_hq(128, seed=4)


def _edge_width(profile: np.ndarray) -> float:
    """10-90 % rise distance (pixels) of a monotone-ish step profile."""
    p = (profile - profile[:3].mean()) / (profile[-3:].mean() - profile[:3].mean())
    return float(np.argmax(p >= 0.9) - np.argmax(p >= 0.1))


@pytest.mark.parametrize("method", WORKING)
def test_shapes_range_and_seeding(hq, method):
    lq = degrade(hq, method, seed=1)
    assert lq.shape == (64, 64) and lq.dtype == np.float32
    assert 0.0 <= lq.min() and lq.max() <= 1.0
    assert degrade(hq[:, :100], method, seed=1, scale=4).shape == (32, 25)  # round(128/4), round(100/4)
    assert degrade(hq, method, seed=1, scale=1).shape == hq.shape
    np.testing.assert_array_equal(degrade(hq, method, seed=1), lq)  # same seed, same output
    # the LQ still shows the same image (correlates with the area-averaged HQ)
    ref = degrade(hq, "area")
    assert np.corrcoef(ref.ravel(), lq.ravel())[0, 1] > 0.6


def test_plain_resizes_are_deterministic_and_differ(hq):
    b0, b1 = degrade(hq, "bicubic", seed=0), degrade(hq, "bicubic", seed=9)
    np.testing.assert_array_equal(b0, b1)
    a = degrade(hq, "area")
    np.testing.assert_allclose(a, hq.reshape(64, 2, 64, 2).mean(axis=(1, 3)), atol=1e-6)  # exact 2x2 box average
    assert np.abs(a - b0).max() > 1e-3


def test_high_order_is_seeded_and_adds_noise_and_blur():
    outs = [degrade(make_hq(128, 4), "high_order", seed=s) for s in range(3)]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    flat = np.full((128, 128), 0.5, np.float32)
    step = np.zeros((128, 128), np.float32)
    step[:, 64:] = 0.8
    step += 0.1
    ref_noise = degrade(flat, "bicubic").std()
    ref_width = _edge_width(degrade(step, "bicubic").mean(axis=0))
    noise, width = [], []
    for s in range(12):
        noise.append(degrade(flat, "high_order", seed=s).std())
        width.append(_edge_width(degrade(step, "high_order", seed=s).mean(axis=0)))  # rows averaged: noise-free
    assert ref_noise < 1e-6
    assert np.median(noise) > 0.005 and min(noise) > 0.0  # gaussian / Poisson noise on a flat field
    assert ref_width <= 1.0 and np.median(width) >= ref_width + 1.0  # edges clearly widened
    lq, params = degrade(step, "high_order", seed=0, return_params=True)
    ops = [c["op"] for c in params["chain"]]
    assert ops.count("blur") >= 1 and ops.count("noise") == 2 and ops.count("jpeg") == 2
    # order 1 and narrow ranges are honoured: no noise at all when the noise ranges are zero
    quiet = degrade(flat, "high_order", seed=3, order=1, noise_sigma=(0, 0), poisson_prob=0.0)
    assert np.abs(quiet - 0.5).max() <= 1 / 255 + 1e-6


def test_gaussian_kernel_anisotropic_covariance():
    k = gaussian_kernel(41, 4.0, 1.5, np.pi / 2)  # rotated by 90 degrees: long axis along rows
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    yy, xx = np.mgrid[-20:21, -20:21]
    var_rows, var_cols = float((k * yy ** 2).sum()), float((k * xx ** 2).sum())
    assert var_rows == pytest.approx(16.0, rel=0.02) and var_cols == pytest.approx(2.25, rel=0.02)


def test_acquisition_blurs_craniocaudal_more_and_is_seeded():
    n = 256
    horiz = np.full((n, n), 0.2, np.float32)  # an edge across rows (cranio-caudal change)
    horiz[n // 2 + 3:, :] = 0.8
    vert = np.ascontiguousarray(horiz.T)  # the same edge across columns
    kw = dict(pixel_spacing_mm=0.3, slice_thickness_mm=5.0, slice_spacing_mm=5.0, scale=1)
    w_rows = _edge_width(degrade(horiz, "acquisition", seed=0, **kw).mean(axis=1))
    w_cols = _edge_width(degrade(vert, "acquisition", seed=0, **kw).mean(axis=0))
    # iso pixel 0.3 / 1.5 = 0.2 mm: 5 mm slabs span 25 px (linear ramp: 10-90 % ~ 20 px); columns see the 0.7 mm
    # voxel (3.5 px) and the standard kernel (0.9 mm FWHM, sigma 1.9 px): a few pixels
    assert 18 <= w_rows <= 32 and w_cols <= 9 and w_rows > 3 * w_cols
    # the slice grid phase is drawn from the seed: another seed moves it
    a = degrade(horiz, "acquisition", seed=0, **kw)
    assert any(not np.array_equal(a, degrade(horiz, "acquisition", seed=s, **kw)) for s in (1, 2, 3))
    np.testing.assert_array_equal(a, degrade(horiz, "acquisition", seed=0, **kw))
    noisy = degrade(np.full((64, 64), 0.5, np.float32), "acquisition", seed=0, noise=0.02, scale=1)
    assert 0.015 < noisy.std() < 0.025
    with pytest.raises(OptionError, match="kernel"):
        degrade(horiz, "acquisition", kernel="bone")


def test_interface_errors(hq):
    from dxr_core.degrade.learned import shipped_ddpm_lq_model

    with pytest.raises(ModelError, match="No MUNIT-LQ model"):
        degrade(hq, "munit", model="/nonexistent/model.pt")
    assert shipped_ddpm_lq_model() is not None  # DDPM-LQ is shipped (with its model card)
    with pytest.raises(ModelError, match="not a DDPM-LQ model"):
        degrade(hq, "ddpm", model=str(ROOT / "dxr_core" / "weights" / "ddpm_hq_pu_small.pt"))
    with pytest.raises(OptionError, match="Unknown degradation method"):
        degrade(hq, "gan")
    with pytest.raises(OptionError, match="no option"):
        degrade(hq, "bicubic", sigma=1)
    with pytest.raises(OptionError, match="Scale"):
        degrade(hq, "bicubic", scale=0.5)
    with pytest.raises(InputError, match="2-D"):
        degrade(np.zeros((2, 8, 8), np.float32), "area")
    with pytest.raises(InputError, match="float"):
        degrade(np.zeros((8, 8), np.uint16), "area")
    assert set(METHODS) == {"bicubic", "area", "high_order", "acquisition", "munit", "ddpm"}
    assert "kernel" in method_options("acquisition")


def test_cli_degrade_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "lq"
    assert main(["degrade", "--method", "high_order", str(SAMPLE), "--out", str(out), "--seed", "5",
                 "--no-progress"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 8 and not list(out.glob(".*part*"))
    with Image.open(pngs[0]) as im:
        assert im.mode.startswith("I;16") and max(im.size) == 128  # 16-bit PNG at half size
    side = json.loads((out / (pngs[0].stem + ".json")).read_text())
    assert side["method"] == "high_order" and side["run_seed"] == 5 and side["chain"]
    before = {p.name: p.read_bytes() for p in pngs}
    assert "8 written" in capsys.readouterr().out
    # resumable: a second run skips everything; a deleted output is written again, identically
    pngs[1].unlink()
    assert main(["degrade", "--method", "high_order", str(SAMPLE), "--out", str(out), "--seed", "5",
                 "--no-progress"]) == 0
    assert "1 written, 7 already there" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))} == before
    # other settings into the same folder: refused, not silently mixed
    assert main(["degrade", "--method", "bicubic", str(SAMPLE), "--out", str(out), "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
    # options reach the method
    assert main(["degrade", "--method", "acquisition", str(SAMPLE / "4d98e1de.png"), "--out", str(tmp_path / "a"),
                 "--option", "kernel=sharp", "--option", "noise=0.01", "--scale", "4", "--no-progress"]) == 0
    side = json.loads((tmp_path / "a" / "4d98e1de.json").read_text())
    assert side["options"]["kernel"] == "sharp" and side["image_size"] == [64, 64]


@pytest.mark.parametrize("args, needle", [
    (["--method", "gan", "IN"], "Unknown degradation method"),
    (["--method", "munit", "IN", "--option", "model=\"/nonexistent/model.pt\""], "No MUNIT-LQ model"),
    (["--method", "bicubic", "BAD"], "cannot be read"),
    (["--method", "bicubic", "IN", "--option", "sigma=2"], "no option"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, args, needle):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    args = [str(SAMPLE / "4d98e1de.png") if a == "IN" else str(bad) if a == "BAD" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "dxr_core.cli", "degrade", *args, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_lq_synthesis_gap_rows(unpaired_domains):
    """evaluate_lq_methods: the source row keeps everything (SSIM 1), a blur moves toward blurred references and
    keeps less of the source, a callable row works like a method row."""
    from scipy.ndimage import gaussian_filter

    from dxr_core.data.radiographs import list_radiographs, load_radiograph
    from dxr_core.degrade.evaluate import SOURCE_ROW, evaluate_lq_methods, format_lq_table

    hq_dir, lq_dir = unpaired_domains
    hq = [load_radiograph(f)[0] for f in list_radiographs(hq_dir)]
    refs = [load_radiograph(f)[0] for f in list_radiographs(lq_dir)]
    res = evaluate_lq_methods(hq, refs, {"bicubic": ("bicubic", {}),
                                         "blur": lambda x, i: gaussian_filter(x[::2, ::2], 1.0),
                                         "retone": lambda x, i: degrade(x, "area") ** 2.5}, grid=64)
    rows = res["rows"]
    assert set(rows) == {SOURCE_ROW, "bicubic", "blur", "retone"} and res["lq_grid"] == 32
    # another grey-level curve costs plain SSIM, not the same-tone SSIM (the anatomy is all there)
    assert rows["retone"]["ssim_to_source"] < 0.9 < rows["retone"]["ssim_same_tone"]
    assert rows[SOURCE_ROW]["ssim_to_source"] == pytest.approx(1.0)
    assert rows["blur"]["spectrum"] < rows["bicubic"]["spectrum"]
    assert rows["blur"]["ssim_to_source"] < rows["bicubic"]["ssim_to_source"]
    assert "| blur |" in format_lq_table(res)

    # look_crop: the gap measures see the centre only, so a change of the framing alone is invisible to them
    def reframed(x, i):
        y = degrade(x, "bicubic").copy()
        y[:6], y[-6:], y[:, :6], y[:, -6:] = 0.0, 1.0, 0.0, 1.0  # outside the central half of a 32-px side
        return y

    both = {"bicubic": ("bicubic", {}), "reframed": reframed}
    whole, centre = (evaluate_lq_methods(hq, refs, both, grid=64, look_crop=f)["rows"] for f in (1.0, 0.5))
    assert whole["reframed"]["spectrum"] != pytest.approx(whole["bicubic"]["spectrum"])
    assert centre["reframed"]["spectrum"] == pytest.approx(centre["bicubic"]["spectrum"])
    assert centre["reframed"]["histogram"] == pytest.approx(centre["bicubic"]["histogram"])
    assert centre["reframed"]["ssim_to_source"] < centre["bicubic"]["ssim_to_source"]  # SSIM stays whole-image
    with pytest.raises(ValueError, match="look_crop"):
        evaluate_lq_methods(hq, refs, both, grid=64, look_crop=0.0)


def test_shipped_ddpm_lq_makes_a_seeded_lq_version(hq):
    """`--method ddpm` works offline with the shipped model: seeded, on the LQ grid, keeps the anatomy."""
    from dxr_core.metrics import ssim
    from dxr_core.metrics.domain import prepare

    x = prepare(hq, 128)
    a, params = degrade(x, "ddpm", seed=1, return_params=True)
    assert a.shape == (64, 64) and params["model_stage"] == 2 and params["content_scale"] == 8
    assert params["tone"].startswith("training DRR") and params["strength"] == 0.3  # the shipped settings
    assert np.array_equal(a, degrade(x, "ddpm", seed=1))
    assert not np.array_equal(a, degrade(x, "ddpm", seed=2))
    assert ssim(a, prepare(x, 64)) > 0.6



def test_munit_without_shipped_weights_says_what_to_do(hq, monkeypatch):
    import dxr_core.degrade.learned as learned

    monkeypatch.setattr(learned, "shipped_munit_model", lambda: None)
    with pytest.raises(ModelError, match="No shipped MUNIT-LQ model.*--option model="):
        degrade(hq, "munit")


def test_shipped_munit_lq_makes_a_seeded_lq_version():
    """`--method munit` works offline with the shipped MUNIT-LQ: seeded, on the LQ grid, keeps the anatomy of real
    radiographs (mean SSIM to the source above the 0.5 floor of its model card) while changing the look."""
    from dxr_core.data.radiographs import list_radiographs, load_radiograph
    from dxr_core.degrade.learned import shipped_munit_model
    from dxr_core.metrics import ssim
    from dxr_core.metrics.domain import prepare

    path = shipped_munit_model()
    assert path is not None and path.with_suffix(".md").is_file()
    scores, changes = [], []
    for i, f in enumerate(list_radiographs(SAMPLE)):
        x = prepare(load_radiograph(f)[0], 256)
        a, params = degrade(x, "munit", seed=i, return_params=True)
        assert a.shape == (128, 128) and params["model"] == str(path)
        scores.append(ssim(a, prepare(x, 128)))
        changes.append(float(np.abs(a - degrade(x, "bicubic")).mean()))
        if i == 0:
            assert np.array_equal(a, degrade(x, "munit", seed=0))
            assert not np.array_equal(a, degrade(x, "munit", seed=1))
    assert np.mean(scores) > 0.5 and min(scores) > 0.4
    assert np.mean(changes) > 0.05  # not a bicubic downsampling in disguise


def test_match_tone_imposes_a_quantile_function_and_keeps_order():
    from dxr_core.degrade.tone import TONE_LEVELS, match_tone, tone_quantiles
    from dxr_core.errors import InputError

    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32) ** 2  # dark-heavy
    target = tone_quantiles(rng.random((64, 64)) * 0.5 + 0.4)  # a brighter, narrower tone
    out = match_tone(img, target)
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.abs(tone_quantiles(out)[4:-4] - target[4:-4]).max() < 0.02
    flat_in, flat_out = img.ravel(), out.ravel()
    order = np.argsort(flat_in)
    assert np.all(np.diff(flat_out[order]) >= -1e-6)  # monotone: the anatomy's order of brightness is kept
    assert np.allclose(match_tone(img, tone_quantiles(img)), img, atol=0.02)  # its own tone: unchanged
    with pytest.raises(InputError, match="quantiles"):
        match_tone(img, TONE_LEVELS[:10])
