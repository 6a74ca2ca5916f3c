"""`dxr drr` as a user runs it (subprocess): outputs, resume, batch with failures, one-line errors."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import require_tool, run_dxr
from dxr_core.io import read_radiograph, write_ct_series
from dxr_core.volume import Volume


def _have_renderer() -> bool:
    try:
        from dxr_core.drr import Physics, make_geometry, render_drr  # noqa: F401
    except ImportError:
        return False
    return True


needs_renderer = pytest.mark.skipif(not _have_renderer(), reason="dxr_core.drr.render_drr is not available yet")
TAGS = {"PatientName": "Doe^Jane", "PatientID": "P0042", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242",
        "AccessionNumber": "ACC1", "StudyDescription": "CT CHEST"}


def chest(nz=12, n=32, seed=0) -> Volume:
    """Tiny chest-like CT in HU: air, body, two lungs, a spine."""
    z, y, x = np.mgrid[:nz, :n, :n].astype(np.float32)
    c = (n - 1) / 2
    arr = np.full((nz, n, n), -1000, np.float32)
    body = ((x - c) / (0.45 * n)) ** 2 + ((y - c) / (0.35 * n)) ** 2 < 1
    arr[body] = 40
    for cx in (c - 0.2 * n, c + 0.2 * n):
        arr[((x - cx) / (0.15 * n)) ** 2 + ((y - c) / (0.22 * n)) ** 2 < 1] = -850
    arr[((x - c) / 2.5) ** 2 + ((y - c - 0.22 * n) / 2.5) ** 2 < 1] = 900
    arr += np.random.default_rng(seed).integers(-3, 4, arr.shape)
    return Volume(arr, spacing=(10.0, 10.0, 25.0), origin=(-155.0, -155.0, -140.0))


def _assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dxr drr: error: "), err
    for n in needles:
        assert n in err, err


# ------------------------------------------------------------------------------------------- errors (no render)
def test_missing_ct_one_line(tmp_path):
    _assert_one_line_error(run_dxr("drr", "--ct", tmp_path / "nope", "--out", tmp_path / "o"), "does not exist")


def test_non_ct_one_line(tmp_path):
    write_ct_series(chest(nz=8), tmp_path / "mr", tags={"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"})
    proc = run_dxr("drr", "--ct", tmp_path / "mr", "--out", tmp_path / "o")
    _assert_one_line_error(proc, "no CT series", "MR")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_truncated_volume_one_line(tmp_path):
    sitk.WriteImage(chest(nz=8).to_sitk(), str(tmp_path / "ct.mha"))
    data = (tmp_path / "ct.mha").read_bytes()
    (tmp_path / "ct.mha").write_bytes(data[: len(data) - 500])
    _assert_one_line_error(run_dxr("drr", "--ct", tmp_path / "ct.mha", "--out", tmp_path / "o"), "truncated")


def test_bad_options_one_line(tmp_path):
    sitk.WriteImage(chest(nz=8).to_sitk(), str(tmp_path / "ct.nrrd"))
    _assert_one_line_error(run_dxr("drr", "--ct", tmp_path / "ct.nrrd", "--out", tmp_path / "o", "--formats", "gif"),
                           "Unknown output format")
    _assert_one_line_error(run_dxr("drr", "--ct", tmp_path / "ct.nrrd", "--out", tmp_path / "o", "--sid-mm", "900"),
                           "--sid-mm")
    proc = run_dxr("drr", "--ct", tmp_path / "ct.nrrd", "--out", tmp_path / "o", "--size", "abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "size" in proc.stderr
    proc = run_dxr("drr", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--ct" in proc.stderr


def test_empty_ct_dir_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    _assert_one_line_error(run_dxr("drr", "--ct-dir", tmp_path / "in", "--out", tmp_path / "o"), "No CT found")


# --------------------------------------------------------------------------------------------------- rendering
@needs_renderer
def test_single_ct_outputs_and_resume(tmp_path):
    write_ct_series(chest(), tmp_path / "ct", tags=TAGS)
    out = tmp_path / "out"
    args = ("drr", "--ct", tmp_path / "ct", "--out", out, "--size", "48x40", "--spacing-mm", "9", "--seed", "3")
    proc = run_dxr(*args, check=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ct.dcm", "ct.json", "ct.nrrd", "ct.png"], names
    ds = pydicom.dcmread(out / "ct.dcm")
    assert (ds.Rows, ds.Columns) == (48, 40) and ds.PatientID == "P0042"
    assert ds.StudyInstanceUID == TAGS["StudyInstanceUID"]
    assert [float(v) for v in ds.ImagerPixelSpacing] == [9.0, 9.0]
    exe = require_tool("dciodvfy")
    v = subprocess.run([exe, str(out / "ct.dcm")], capture_output=True, text=True, timeout=60)
    assert not [ln for ln in (v.stdout + v.stderr).splitlines() if ln.startswith("Error")], v.stderr
    img, sp, meta = read_radiograph(out / "ct.png")
    assert img.shape == (48, 40) and sp == (9.0, 9.0) and 0 <= img.min() and img.max() <= 1 and img.std() > 0.01
    side = json.loads((out / "ct.json").read_text())
    assert side["dxr_drr"]["settings"]["size"] == [48, 40] and "projection_matrix" in side
    # rerun: skipped, files untouched
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = run_dxr(*args, check=True)
    assert "already done" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # changed settings: rendered again
    proc = run_dxr(*args[:-2], "--seed", "4", "--formats", "png,json", check=True)
    assert (out / "ct.png").stat().st_mtime_ns != mtimes["ct.png"]
    assert (out / "ct.dcm").stat().st_mtime_ns == mtimes["ct.dcm"]


@needs_renderer
def test_batch_keeps_good_outputs_and_reports_failures(tmp_path):
    src = tmp_path / "cts"
    write_ct_series(chest(seed=1), src / "p1" / "series", tags=TAGS)
    sitk.WriteImage(chest(seed=2).to_sitk(), str(src / "p2.nii.gz"))
    sitk.WriteImage(chest(seed=3).to_sitk(), str(src / "p3.nrrd"))
    out = tmp_path / "out"
    common = ("drr", "--ct-dir", src, "--out", out, "--size", "32", "--spacing-mm", "12", "--formats", "png,json")
    run_dxr(*common, check=True)
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(good) == ["p1_series.json", "p1_series.png", "p2.json", "p2.png", "p3.json", "p3.png"]
    # add a corrupt CT and a truncated DICOM series; rerun: good ones skipped and intact, bad ones reported
    data = (src / "p3.nrrd").read_bytes()
    (src / "p4.nrrd").write_bytes(data[: len(data) // 2])
    paths = write_ct_series(chest(seed=5), src / "p5")
    paths[3].unlink()
    proc = run_dxr(*common)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "3 already done, 2 failed" in proc.stdout, proc.stdout
    assert "p4.nrrd" in proc.stderr and "p5" in proc.stderr and "missing 1 slice" in proc.stderr
    now = {p.name: p.read_bytes() for p in out.iterdir()}
    assert now == good  # nothing lost, nothing half-written, no temporaries
    # the source CT changes -> that one is rendered again, the others stay skipped
    sitk.WriteImage(chest(seed=9).to_sitk(), str(src / "p2.nii.gz"))
    (src / "p4.nrrd").unlink()
    import shutil

    shutil.rmtree(src / "p5")
    proc = run_dxr(*common, check=True)
    assert "1 rendered, 2 already done, 0 failed" in proc.stdout, proc.stdout


@needs_renderer
def test_oblique_dicom_and_nifti_give_the_same_drr(tmp_path):
    from test_io_ct import _rot

    vol = chest(nz=10, n=24)
    vol = Volume(vol.array, vol.spacing, vol.origin, _rot(0.15, -0.1, 0.3))
    src = tmp_path / "cts"
    write_ct_series(vol, src / "dicom")
    sitk.WriteImage(vol.to_sitk(), str(src / "nifti.nii.gz"))
    out = tmp_path / "out"
    # raw projection: the geometry alone (the preset's clean-up would mask each grid's own voxels)
    run_dxr("drr", "--ct-dir", src, "--out", out, "--preset", "none", "--size", "40", "--spacing-mm", "10",
            "--mode", "mono", "--formats", "nrrd,json", check=True)
    a, sa, _ = read_radiograph(out / "dicom.nrrd")
    b, sb, _ = read_radiograph(out / "nifti.nrrd")
    assert sa == sb == (10.0, 10.0) and a.std() > 0.01
    np.testing.assert_allclose(a, b, atol=1e-4)
    ja, jb = (json.loads((out / f"{s}.json").read_text()) for s in ("dicom", "nifti"))
    np.testing.assert_allclose(ja["projection_matrix"], jb["projection_matrix"], atol=1e-6)


@needs_renderer
def test_stale_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    sitk.WriteImage(chest(nz=8, n=20).to_sitk(), str(tmp_path / "ct.nrrd"))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".ct.png.abc123.part.png"  # what atomic_path leaves behind when the process is SIGKILLed
    stale.write_bytes(b"half")
    (out / "ct.png").write_bytes(b"old unfinished run without sidecar")
    run_dxr("drr", "--ct", tmp_path / "ct.nrrd", "--out", out, "--size", "24", "--spacing-mm", "12",
            "--mode", "mono", "--formats", "png,json", check=True)
    assert sorted(p.name for p in out.iterdir()) == ["ct.json", "ct.png"]
    assert read_radiograph(out / "ct.png")[0].shape == (24, 24)


@needs_renderer
def test_hook_contract_for_other_packages(tmp_path, monkeypatch):
    """A `dxr_core.<pkg>.drr_hooks` module adds options, edits the volume, adds sidecar entries and extra files."""
    import types

    import dxr_core.drr.commands as cmd
    from dxr_core.cli import main
    from dxr_core.io.atomic import write_text_atomic

    calls = []
    hook = types.ModuleType("dxr_core.fake.drr_hooks")
    hook.add_arguments = lambda p: p.add_argument("--blob-hu", type=float, default=None)
    hook.settings = lambda args: {"blob_hu": args.blob_hu} if args.blob_hu is not None else None
    hook.expected_outputs = lambda args, out, stem: [out / f"{stem}_labels.json"] if args.blob_hu is not None else []

    def before(job):
        calls.append("before")
        if job.args.blob_hu is not None:
            arr = job.volume.array.copy()
            arr[:, 8:12, 8:12] = job.args.blob_hu
            job.volume = job.volume.with_array(arr)

    def after(job):
        calls.append("after")
        if job.args.blob_hu is not None:
            p = write_text_atomic(job.out_dir / f"{job.stem}_labels.json", '{"boxes": []}')
            job.extra_outputs.append(p)
            job.sidecar_extra["blobs"] = [{"hu": job.args.blob_hu}]

    hook.before_render, hook.after_render = before, after
    monkeypatch.setattr(cmd, "discover_hooks", lambda: [hook])
    sitk.WriteImage(chest(nz=8, n=20).to_sitk(), str(tmp_path / "ct.nrrd"))
    base = ["drr", "--ct", str(tmp_path / "ct.nrrd"), "--size", "24", "--spacing-mm", "12", "--mode", "mono",
            "--formats", "nrrd,json"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--blob-hu", "2000"]) == 0
    assert calls == ["before", "after"] * 2
    side = json.loads((tmp_path / "b" / "ct.json").read_text())
    assert side["blobs"] == [{"hu": 2000.0}] and side["dxr_drr"]["extra_outputs"] == ["ct_labels.json"]
    assert side["dxr_drr"]["settings"]["hooks"]["dxr_core.fake.drr_hooks"] == {"blob_hu": 2000.0}
    a, b = read_radiograph(tmp_path / "a" / "ct.nrrd")[0], read_radiograph(tmp_path / "b" / "ct.nrrd")[0]
    assert (b > a + 1e-3).any()  # the blob shows up
    # resume: same settings skipped; a missing extra output forces a re-render
    assert main(base + ["--out", str(tmp_path / "b"), "--blob-hu", "2000"]) == 0
    assert calls == ["before", "after"] * 2
    (tmp_path / "b" / "ct_labels.json").unlink()
    assert main(base + ["--out", str(tmp_path / "b"), "--blob-hu", "2000"]) == 0
    assert calls == ["before", "after"] * 3 and (tmp_path / "b" / "ct_labels.json").exists()
