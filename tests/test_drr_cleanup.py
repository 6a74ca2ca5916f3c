"""CT clean-up before projection (dxr_core.drr.cleanup, `dxr drr --cleanup`): table, FOV completion, taper, contrast.

Real data: the committed LIDC-IDRI-0006 sample (tests/data/lidc_idri_0006_small, 2.5 x 2.5 x 5 mm, with its
couch and the -2048 padding outside the reconstruction circle). Phantoms: dxr_core.phantom with a synthetic couch,
a synthetic reconstruction circle, a short scan range and synthetic contrast (blood-pool HU raised).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from dxr_core.cli import main
from dxr_core.drr import Physics, make_geometry, render_drr
from dxr_core.drr.cleanup import (
    ContrastWarning,
    body_mask,
    cleanup_ct,
    detect_contrast,
    parse_steps,
)
from dxr_core.errors import OptionError
from dxr_core.io import read_ct, read_radiograph
from dxr_core.volume import Volume

SAMPLE = Path(__file__).parent / "data" / "lidc_idri_0006_small" / "lidc_idri_0006_small.nrrd"
MONO = Physics(mode="mono")


@pytest.fixture(scope="module")
def phantom():
    from dxr_core.phantom import make_chest_phantom

    # 360 mm square in-plane grid: the body (about 350 x 240 mm) is wider than a 150 mm-radius circle
    return make_chest_phantom(seed=0, spacing_mm=(3.0, 3.0, 4.0), fov_mm=(360, 360, 300))


def _drr(vol, geom):
    return np.asarray(render_drr(vol, geom, MONO).image, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# real CT: the couch in the lateral view
# ----------------------------------------------------------------------------------------------------------------
def test_real_ct_table_visible_in_lateral_view_before_and_absent_after(tmp_path):
    # the raw projection (--preset none) isolates the couch step from the acquisition model
    base = ["drr", "--ct", str(SAMPLE), "--preset", "none", "--view", "lateral", "--size", "128",
            "--formats", "nrrd,json"]
    assert main(base + ["--out", str(tmp_path / "raw")]) == 0
    assert main(base + ["--out", str(tmp_path / "none"), "--cleanup", "none"]) == 0
    assert main(base + ["--out", str(tmp_path / "clean"), "--cleanup", "table"]) == 0
    raw = read_radiograph(tmp_path / "raw" / "lidc_idri_0006_small.nrrd")[0]
    none = read_radiograph(tmp_path / "none" / "lidc_idri_0006_small.nrrd")[0]
    clean = read_radiograph(tmp_path / "clean" / "lidc_idri_0006_small.nrrd")[0]
    assert np.array_equal(raw, none)  # --cleanup none is today's output, bit for bit
    side = json.loads((tmp_path / "clean" / "lidc_idri_0006_small.json").read_text())
    assert side["cleanup"]["steps"] == ["table"] and side["cleanup"]["table"]["removed_dense_ml"] > 50
    assert side["cleanup"]["padding"]["pad_hu"] == -2048.0 and side["cleanup"]["padding"]["circle"]
    assert side["projection_matrix"] == json.loads((tmp_path / "raw" / "lidc_idri_0006_small.json")
                                                   .read_text())["projection_matrix"]  # same detector grid
    assert "cleanup" not in json.loads((tmp_path / "none" / "lidc_idri_0006_small.json").read_text())

    # the band behind the patient's back (posterior of the body: where the couch lies), central rows
    ct = read_ct(SAMPLE)
    hu = np.where(ct.array <= -2000, -1000.0, ct.array)
    body = body_mask(hu, ct.spacing)
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    y_back = ct.index_to_world(np.array([0.0, ys.max(), 0.0]))[1]
    geom = make_geometry(ct, view="lateral", size=128)
    c = ct.center_lps
    cols = geom.project_points(np.array([[c[0], y_back + 8.0, c[2]], [c[0], y_back + 45.0, c[2]]]))[:, 0]
    lo, hi = int(np.ceil(min(cols))), int(np.floor(max(cols)))
    assert hi - lo >= 3
    band_raw, band_clean = raw[32:96, lo:hi + 1], clean[32:96, lo:hi + 1]
    assert band_raw.mean() > 0.05  # the couch shows
    assert band_clean.mean() < 0.2 * band_raw.mean() and band_clean.max() < 0.05  # and is gone
    # the body itself is untouched: the central columns agree
    mid = int(round(geom.project_points(c[None])[0, 0]))
    assert np.abs(raw[32:96, mid - 5:mid + 5] - clean[32:96, mid - 5:mid + 5]).max() < 0.02


def test_real_ct_all_steps_record_and_resume(tmp_path, capsys):
    args = ["drr", "--ct", str(SAMPLE), "--out", str(tmp_path), "--size", "64", "--formats", "nrrd,json",
            "--cleanup", "table,fov,taper"]
    assert main(args) == 0
    side = json.loads((tmp_path / "lidc_idri_0006_small.json").read_text())
    rep = side["cleanup"]
    assert rep["steps"] == ["table", "fov", "taper"]
    assert rep["fov"]["truncated"] and rep["fov"]["synthetic"] and rep["fov"]["added_ml"] > 0
    assert rep["taper"]["synthetic"] and rep["taper"]["slices_added"] == [8, 8]
    assert rep["contrast"]["mapped"] is False
    hooks = side["dxr_drr"]["settings"]["hooks"]["dxr_core.drr.drr_hooks"]["cleanup"]
    assert hooks["steps"] == ["table", "fov", "taper"]
    capsys.readouterr()
    assert main(args) == 0
    assert "already done" in capsys.readouterr().out


def test_bad_step_is_an_option_error(tmp_path, capsys):
    with pytest.raises(OptionError, match="unknown step"):
        parse_steps("table,couch")
    with pytest.raises(SystemExit) as e:
        main(["drr", "--ct", str(SAMPLE), "--out", str(tmp_path), "--cleanup", "couch"])
    assert e.value.code == 2
    assert "couch" in capsys.readouterr().err
    assert parse_steps("all").steps == ["table", "fov", "taper", "contrast"] and not parse_steps("none").any


# ----------------------------------------------------------------------------------------------------------------
# phantoms
# ----------------------------------------------------------------------------------------------------------------
def test_phantom_synthetic_table_removed(phantom):
    a = phantom.array.copy()
    body = body_mask(a, phantom.spacing)
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    # a couch: a 3 mm carbon shell (+300 HU) 12 mm behind the back and a 6 mm mattress (-300 HU) touching it
    top = ys.max() + 4
    a[:, top:top + 1, 5:-5] = 300.0
    a[:, top - 2:top, 10:-10] = -300.0
    vol = phantom.with_array(a)
    clean, rep = cleanup_ct(vol, "table")
    assert rep["table"]["removed_dense_ml"] > 100
    assert np.all(clean.array[:, top - 1:top + 1, 5:-5] == -1000.0)
    inside = body & (phantom.array > -500)
    assert np.array_equal(clean.array[inside], phantom.array[inside])  # the body is untouched
    geom = make_geometry(phantom, view="lateral", size=96)
    d_tab, d_clean, d_ref = _drr(vol, geom), _drr(clean, geom), _drr(phantom, geom)
    e_tab, e_clean = np.abs(d_tab - d_ref), np.abs(d_clean - d_ref)
    assert e_tab.max() > 0.1  # the couch shows in the lateral view
    # gone, but for the part of the mattress within the opening radius of the back (a documented limit)
    assert e_clean.max() < 0.3 * e_tab.max() and e_clean.sum() < 0.1 * e_tab.sum()


def test_phantom_contrast_detected_warned_and_mapped(phantom):
    from dxr_core.phantom import HU

    a = phantom.array
    body = body_mask(a, phantom.spacing)
    plain = detect_contrast(a, body, phantom.spacing)
    assert not plain["detected"]
    blood = np.abs(a - HU["blood"]) < 1.0
    enhanced = np.where(blood, a + 250.0, a)
    det = detect_contrast(enhanced, body, phantom.spacing)
    assert det["detected"] and det["blood_pool_median_hu"] > 250 and det["blood_pool_ml"] > 100
    vol = phantom.with_array(enhanced)
    with pytest.warns(ContrastWarning, match="contrast-enhanced"):
        _, rep = cleanup_ct(vol, "table")
    assert rep["contrast"]["detected"] and not rep["contrast"]["mapped"] and rep["warnings"]
    with pytest.warns(ContrastWarning):
        mapped, rep = cleanup_ct(vol, "contrast")
    assert rep["contrast"]["mapped"] and rep["contrast"]["mapped_to_hu"] == 40.0
    m = mapped.array
    assert abs(float(np.median(m[blood])) - 40.0) < 5  # heart and great vessels back to unenhanced blood
    bone = a > 500
    assert np.array_equal(m[bone], a[bone])  # bones are not touched
    # the plain phantom: no warning, nothing changed but air outside the body
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContrastWarning)
        out, rep = cleanup_ct(phantom, "contrast")
    assert not rep["contrast"]["detected"] and not rep["contrast"]["mapped"]
    assert np.array_equal(out.array, a)


def test_phantom_fov_completion_removes_the_straight_truncation_edge(phantom):
    a = phantom.array
    _, ny, nx = a.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot((yy - (ny - 1) / 2) * phantom.spacing[1], (xx - (nx - 1) / 2) * phantom.spacing[0])
    cut = a.copy()
    cut[:, r > 150.0] = -2048.0  # a 300 mm reconstruction circle: the sides of the body are cut off
    vol = phantom.with_array(cut)
    done, rep = cleanup_ct(vol, "fov")
    f = rep["fov"]
    assert f["truncated"] and f["synthetic"] and f["added_ml"] > 500 and 5 < f["max_extension_mm"] <= 50
    assert done.array.shape[1] > ny and np.allclose(done.center_lps, phantom.center_lps)
    geom = make_geometry(phantom, view="pa", size=128)
    ref, trunc, comp = _drr(phantom, geom), _drr(vol, geom), _drr(done, geom)
    rows = slice(24, 104)
    sides = np.r_[0:40, 88:128]

    def edges(img):  # per row: the outermost columns where the body shows (value > 0.05), left and right
        m = img[rows] > 0.05
        return np.stack([m.argmax(axis=1), img.shape[1] - 1 - m[:, ::-1].argmax(axis=1)], axis=1)

    e_ref, e_t, e_c = edges(ref), edges(trunc), edges(comp)
    assert np.abs(e_t - e_ref).mean() >= 3  # the cut moves the body's edges inwards (a straight cut at the circle)
    assert np.abs(e_c - e_ref).mean() < 0.5 * np.abs(e_t - e_ref).mean()
    err_t = np.abs(trunc - ref)[rows][:, sides].mean()
    err_c = np.abs(comp - ref)[rows][:, sides].mean()
    assert err_c < 0.5 * err_t  # closer to the uncut phantom
    # the in-FOV tissue is unchanged
    inner = r < 140
    py, px = f["grid_padding_px_yx"]
    assert np.array_equal(done.array[:, py:py + ny, px:px + nx][:, inner], a[:, inner])


def test_phantom_taper_removes_end_bands(phantom):
    # a short scan range (120 mm) that ends mid-chest: a step at the top and bottom of the DRR
    k0, k1 = 22, 52
    short = Volume(phantom.array[k0:k1].copy(), spacing=phantom.spacing,
                   origin=tuple(phantom.index_to_world(np.array([0.0, 0.0, k0]))), direction=phantom.direction)
    tap, rep = cleanup_ct(short, "taper")
    n = rep["taper"]["slices_added"]
    assert n == [10, 10] and rep["taper"]["synthetic"]
    assert np.array_equal(tap.array[n[0]:n[0] + short.array.shape[0]], short.array)  # measured slices kept
    geom = make_geometry(phantom, view="pa", size=128)
    before, after = _drr(short, geom), _drr(tap, geom)
    prof_b, prof_a = before[:, 44:84].mean(axis=1), after[:, 44:84].mean(axis=1)
    step_b, step_a = np.abs(np.diff(prof_b)).max(), np.abs(np.diff(prof_a)).max()

    def edge_width(prof):  # rows between 10 % and 90 % of the plateau, top and bottom edges together
        lvl = np.median(prof[prof > 0.05])
        return int((prof > 0.1 * lvl).sum() - (prof > 0.9 * lvl).sum())

    assert step_b > 0.12  # the scan ends show as bands with hard edges
    assert step_a < 0.5 * step_b
    assert edge_width(prof_a) >= 2 * edge_width(prof_b)
