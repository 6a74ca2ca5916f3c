"""`dxr drr --preset ...` and the acquisition switches (in process: dxr_core.cli.main)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from dxr_core.cli import main
from dxr_core.io import read_radiograph
from test_cli_drr import chest


@pytest.fixture()
def ct(tmp_path):
    p = tmp_path / "ct.nrrd"
    sitk.WriteImage(chest(nz=12, n=32).to_sitk(), str(p))
    return p


def _side(out):
    return json.loads((out / "ct.json").read_text())


def test_preset_render_records_everything(tmp_path, ct):
    out = tmp_path / "pa"
    assert main(["drr", "--ct", str(ct), "--out", str(out), "--preset", "pa-chest", "--size", "64",
                 "--formats", "nrrd,json"]) == 0
    side = _side(out)
    g, acq, s = side["geometry"], side["acquisition"], side["dxr_drr"]["settings"]
    assert g["sid_mm"] == 1800.0 and g["sad_mm"] == 1650.0 and g["view"] == "pa"
    assert g["pixel_spacing_mm"] == pytest.approx([429.0 / 64] * 2)
    assert acq["preset"] == "pa-chest" and acq["scatter"]["enabled"] and acq["detector"]["enabled"]
    assert acq["grid"]["ratio"] == 10.0 and acq["processing"]["mode"] == "default"
    assert side["physics"]["kvp"] == 125.0 and side["physics"]["filtration_mm_cu"] == 0.1
    assert s["acquisition"] == {"preset": "pa-chest", "scatter": None, "grid_ratio": None, "detector": None,
                                "processing": None}
    # explicit options override the preset; switches turn steps off
    out2 = tmp_path / "pa2"
    assert main(["drr", "--ct", str(ct), "--out", str(out2), "--preset", "pa-chest", "--size", "64", "--kvp", "110",
                 "--scatter", "off", "--grid-ratio", "0", "--detector", "off", "--processing", "raw",
                 "--formats", "nrrd,json"]) == 0
    side2 = _side(out2)
    assert side2["physics"]["kvp"] == 110.0 and not side2["acquisition"]["scatter"]["enabled"]
    assert side2["acquisition"]["grid"]["ratio"] == 0.0 and side2["acquisition"]["processing"]["mode"] == "raw"
    # resume: same settings are skipped
    mtime = (out / "ct.nrrd").stat().st_mtime_ns
    assert main(["drr", "--ct", str(ct), "--out", str(out), "--preset", "pa-chest", "--size", "64",
                 "--formats", "nrrd,json"]) == 0
    assert (out / "ct.nrrd").stat().st_mtime_ns == mtime


def test_default_is_pa_chest_and_none_is_the_raw_projection(tmp_path, ct):
    base = ["drr", "--ct", str(ct), "--size", "48", "--formats", "nrrd,json"]
    assert main(base + ["--out", str(tmp_path / "default")]) == 0
    assert main(base + ["--out", str(tmp_path / "pa"), "--preset", "pa-chest"]) == 0
    d, pa = read_radiograph(tmp_path / "default" / "ct.nrrd")[0], read_radiograph(tmp_path / "pa" / "ct.nrrd")[0]
    assert np.array_equal(d, pa)
    sd = _side(tmp_path / "default")
    assert sd["acquisition"]["preset"] == "pa-chest" and sd["geometry"]["sid_mm"] == 1800.0
    assert sd["cleanup"]["steps"]  # the CT is cleaned up by default too

    # --preset none and every switch off: the raw projection, recorded as before presets existed
    assert main(base + ["--out", str(tmp_path / "a"), "--preset", "none"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--preset", "none", "--processing", "raw", "--scatter", "off",
                        "--detector", "off"]) == 0
    a, b = read_radiograph(tmp_path / "a" / "ct.nrrd")[0], read_radiograph(tmp_path / "b" / "ct.nrrd")[0]
    assert np.array_equal(a, b) and not np.allclose(a, d, atol=0.01)
    sa = _side(tmp_path / "a")["dxr_drr"]["settings"]
    assert "acquisition" not in sa  # the raw settings record is unchanged (old raw outputs still count as done)
    assert sa["view"] == "pa" and sa["size"] == [48, 48] and sa["kvp"] == 120.0 and sa["sid_mm"] == 1500.0
    assert sa["sad_mm"] == 1000.0
    assert _side(tmp_path / "a")["acquisition"]["processing"]["mode"] == "raw"
    assert "cleanup" not in _side(tmp_path / "a")


def test_native_size_and_bad_preset(tmp_path, ct, capsys):
    assert main(["drr", "--ct", str(ct), "--out", str(tmp_path / "n"), "--preset", "ap-portable", "--size", "native",
                 "--formats", "json", "--detector", "off", "--scatter", "off"]) == 0
    g = _side(tmp_path / "n")["geometry"]
    assert g["size"] == [2688, 2688] and g["pixel_spacing_mm"] == pytest.approx([0.16, 0.16], rel=1e-3)
    assert main(["drr", "--ct", str(ct), "--out", str(tmp_path / "x"), "--preset", "none", "--size", "native"]) != 0
    assert "--size native" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["drr", "--ct", str(ct), "--out", str(tmp_path / "y"), "--preset", "pa_chst"])
    assert "unknown preset" in capsys.readouterr().err


def test_lateral_and_portable_presets_and_bad_grid(tmp_path, ct, capsys):
    for name, view, sid in (("lateral", "lateral", 1800.0), ("ap-portable", "ap", 1000.0)):
        out = tmp_path / name
        assert main(["drr", "--ct", str(ct), "--out", str(out), "--preset", name, "--spacing-mm", "6",
                     "--formats", "json"]) == 0
        g = _side(out)["geometry"]
        assert g["view"] == view and g["sid_mm"] == sid and g["size"] == [72, 72]
    assert main(["drr", "--ct", str(ct), "--out", str(tmp_path / "x"), "--grid-ratio", "40", "--size", "16"]) != 0
    assert "--grid-ratio" in capsys.readouterr().err
