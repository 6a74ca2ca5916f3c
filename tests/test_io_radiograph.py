"""DRR output (DICOM DX passing dciodvfy, 16-bit PNG, NRRD, JSON sidecar) and radiograph read/write round trips."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dxr_core.errors import InputError, OptionError
from dxr_core.io import read_radiograph, write_drr, write_dx, write_radiograph
from dxr_core.io.radiograph import _sitk_2d_raw  # noqa: F401  (monkeypatched below)
from dxr_core.volume import Volume

from conftest import require_tool

CT_TAGS = {"PatientName": "Doe^Jane", "PatientID": "P0042", "PatientBirthDate": "19700101", "PatientSex": "F",
           "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242", "StudyID": "S7", "StudyDate": "20240102",
           "StudyTime": "101500", "AccessionNumber": "ACC1", "ReferringPhysicianName": "Who^Doctor",
           "StudyDescription": "CT CHEST", "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.777",
           "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.555", "Modality": "CT"}


@dataclass
class FakePhysics:
    mode: str = "poly"
    kvp: float = 120.0
    energy_kev: float = 60.0
    filtration_mm_al: float = 2.5
    photons_per_pixel: float | None = None

    def to_dict(self):
        return asdict(self)


class FakeDRR:
    """Same attributes as dxr_core.drr.DRR (CONTRACT.md) for writer tests that must not depend on the projector."""

    def __init__(self, image, geometry, meta):
        self.image = image
        self.line_integral = -np.log(np.clip(1 - image, 1e-3, 1))
        self.geometry = geometry
        self.physics = FakePhysics()
        self.meta = meta

    def sidecar(self):
        return {"geometry": self.geometry.to_dict(), "projection_matrix": self.geometry.projection_matrix.tolist(),
                "physics": self.physics.to_dict(), "source": {"path": self.meta.get("source"),
                                                              "dicom": self.meta.get("dicom", {})}}


def _volume(meta=None) -> Volume:
    return Volume(np.zeros((8, 24, 20), np.float32), spacing=(1.0, 1.0, 2.0), meta=dict(meta or {}))


def make_drr(meta=None, view="pa", size=(40, 36), spacing=(0.6, 0.5)):
    from dxr_core.drr.geometry import make_geometry

    vol = _volume(meta)
    g = make_geometry(vol, view=view, size=size, pixel_spacing_mm=spacing)
    rng = np.random.default_rng(1)
    img = np.clip(rng.random(size) * 0.8 + 0.1, 0, 1).astype(np.float32)
    img[0, 0], img[-1, -1] = 0.0, 1.0
    return FakeDRR(img, g, vol.meta)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    exe = require_tool("dciodvfy")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    return errors, warnings


# ------------------------------------------------------------------------------------------------ write_drr
def test_write_drr_all_formats(tmp_path):
    drr = make_drr({"source": "/data/ct1", "dicom": CT_TAGS})
    out = write_drr(drr, tmp_path / "o", "case1")
    assert set(out) == {"dcm", "png", "nrrd", "json"}
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["case1.dcm", "case1.json", "case1.nrrd",
                                                                 "case1.png"]
    expected = np.round(drr.image.astype(np.float64) * 65535).astype(np.uint16)
    # outputs get the permissions of a plain open() (0666 & ~umask), not the temporary file's 0600
    mask = os.umask(0o022)
    os.umask(mask)
    assert {oct(p.stat().st_mode & 0o777) for p in out.values()} == {oct(0o666 & ~mask)}

    # DICOM DX: conformance, tags, spacing, values (pydicom and SimpleITK)
    errors, warnings = dciodvfy(out["dcm"])
    assert errors == [] and warnings == [], errors + warnings
    ds = pydicom.dcmread(out["dcm"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" and ds.Modality == "DX"
    assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BitsStored == 16 and ds.PixelRepresentation == 0
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.6, 0.5]
    mag = drr.geometry.sid_mm / drr.geometry.sad_mm
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.6 / mag, 0.5 / mag], rtol=1e-8)
    assert ds.ViewPosition == "PA" and list(ds.PatientOrientation) == ["L", "F"]
    assert float(ds.DistanceSourceToDetector) == drr.geometry.sid_mm
    for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
        assert str(ds.data_element(k).value) == CT_TAGS[k], k
    assert ds.SeriesInstanceUID != CT_TAGS["SeriesInstanceUID"]
    assert ds.SOPInstanceUID != ds.SeriesInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, expected)
    img = sitk.ReadImage(str(out["dcm"]))
    np.testing.assert_allclose(img.GetSpacing()[:2], (0.5, 0.6))  # SimpleITK (x=col, y=row): ImagerPixelSpacing
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).reshape(expected.shape), expected)

    # PNG 16-bit
    from PIL import Image

    with Image.open(out["png"]) as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.array(im), expected)

    # NRRD float with spacing
    n = sitk.ReadImage(str(out["nrrd"]))
    np.testing.assert_allclose(n.GetSpacing(), (0.5, 0.6))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(n), drr.image)

    # JSON sidecar
    side = json.loads(out["json"].read_text())
    assert np.asarray(side["projection_matrix"]).shape == (3, 4)
    assert side["outputs"] == {"dcm": "case1.dcm", "png": "case1.png", "nrrd": "case1.nrrd"}
    assert side["pixel_spacing_mm"] == [0.6, 0.5] and side["image_size"] == [40, 36]
    assert side["physics"]["kvp"] == 120.0


@pytest.mark.parametrize("view,vp,po", [("ap", "AP", ["L", "F"]), ("lateral", "LL", ["P", "F"])])
def test_dx_without_ct_tags_and_other_views(tmp_path, view, vp, po):
    drr = make_drr({"source": "/data/ct.nii.gz", "format": "nifti"}, view=view)
    out = write_drr(drr, tmp_path, "x", formats=("dcm",))
    assert list(out) == ["dcm"] and not (tmp_path / "x.json").exists()
    errors, warnings = dciodvfy(out["dcm"])
    assert errors == [] and warnings == [], errors + warnings
    ds = pydicom.dcmread(out["dcm"])
    assert ds.ViewPosition == vp and list(ds.PatientOrientation) == po
    assert ds.StudyInstanceUID and ds.PatientID.startswith("DXR-")


def test_write_drr_is_all_or_nothing(tmp_path, monkeypatch):
    drr = make_drr({"dicom": CT_TAGS})
    write_drr(drr, tmp_path, "c")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import dxr_core.io.radiograph as rg

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rg, "_sitk_2d_raw", boom)
    drr2 = make_drr({"dicom": CT_TAGS})
    drr2.image = 1.0 - drr2.image
    with pytest.raises(RuntimeError):
        write_drr(drr2, tmp_path, "c")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # nothing replaced, no temporary files left


def test_bad_formats(tmp_path):
    with pytest.raises(OptionError, match="Unknown output format"):
        write_drr(make_drr(), tmp_path, "x", formats="dcm,jpg")


# ------------------------------------------------------------------------------------------- radiograph I/O
def test_read_radiograph_round_trips(tmp_path):
    drr = make_drr({"source": "/data/ct1", "dicom": CT_TAGS})
    out = write_drr(drr, tmp_path, "r")
    for fmt in ("dcm", "png", "nrrd"):
        img, spacing, meta = read_radiograph(out[fmt])
        assert img.dtype == np.float32 and img.shape == drr.image.shape
        np.testing.assert_allclose(img, drr.image, atol=0.51 / 65535)
        np.testing.assert_allclose(spacing, (0.6, 0.5), rtol=1e-6)
        assert meta["sidecar"]["outputs"]["png"] == "r.png"
    _, _, meta = read_radiograph(out["dcm"])
    assert meta["dicom"]["PatientID"] == "P0042" and meta["dicom"]["ViewPosition"] == "PA"
    # PNG without a sidecar: spacing from its pHYs chunk
    out["json"].unlink()
    _, spacing, meta = read_radiograph(out["png"])
    np.testing.assert_allclose(spacing, (0.6, 0.5), atol=1e-4)
    assert meta["spacing_source"] == "png-phys"


def test_write_radiograph_enhanced_dicom_keeps_tags(tmp_path):
    drr = make_drr({"source": "/data/ct1", "dicom": CT_TAGS})
    src = write_drr(drr, tmp_path, "src")["dcm"]
    img, spacing, meta = read_radiograph(src)
    big = np.kron(img, np.ones((2, 2), np.float32))  # "2x super-resolution"
    new_spacing = (spacing[0] / 2, spacing[1] / 2)
    out = write_radiograph(big, new_spacing, tmp_path / "enh.dcm", meta, description="DRR PA enhanced x2")
    errors, warnings = dciodvfy(out)
    assert errors == [] and warnings == [], errors + warnings
    a, b = pydicom.dcmread(src), pydicom.dcmread(out)
    for k in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "ViewPosition", "PatientOrientation"):
        assert a.data_element(k).value == b.data_element(k).value, k
    assert b.SOPInstanceUID != a.SOPInstanceUID and b.SeriesInstanceUID != a.SeriesInstanceUID
    assert (b.Rows, b.Columns) == (2 * a.Rows, 2 * a.Columns)
    np.testing.assert_allclose([float(v) for v in b.ImagerPixelSpacing], [0.3, 0.25])
    np.testing.assert_allclose([float(v) for v in b.PixelSpacing], [float(v) / 2 for v in a.PixelSpacing])
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.SeriesDescription == "DRR PA enhanced x2" and list(b.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    back, sp, _ = read_radiograph(out)
    np.testing.assert_allclose(back, big, atol=0.51 / 65535)
    np.testing.assert_allclose(sp, new_spacing)
    for ext in ("png", "nrrd"):
        p = write_radiograph(big, new_spacing, tmp_path / f"enh.{ext}", meta)
        back, sp, _ = read_radiograph(p)
        np.testing.assert_allclose(back, big, atol=0.51 / 65535)
        np.testing.assert_allclose(sp, new_spacing, atol=1e-4)


def test_read_monochrome1_8bit_and_rgb(tmp_path):
    from PIL import Image

    ds_path = write_dx(tmp_path / "m1.dcm", np.full((8, 8), 0.25), (0.2, 0.2), {})
    ds = pydicom.dcmread(ds_path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelData = np.full((8, 8), 1000, np.uint16).tobytes()
    ds.save_as(ds_path)
    img, sp, _ = read_radiograph(ds_path)
    np.testing.assert_allclose(img, 1 - 1000 / 4095, atol=1e-6)
    assert sp == (0.2, 0.2)
    Image.fromarray(np.full((5, 6), 51, np.uint8)).save(tmp_path / "g.png")
    img, sp, _ = read_radiograph(tmp_path / "g.png")
    assert sp is None and img.shape == (5, 6)
    np.testing.assert_allclose(img, 0.2, atol=1e-6)
    Image.fromarray(np.full((5, 6, 3), 255, np.uint8)).save(tmp_path / "c.png")
    img, _, _ = read_radiograph(tmp_path / "c.png")
    np.testing.assert_allclose(img, 1.0)


def test_read_radiograph_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_radiograph(tmp_path / "none.png")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_radiograph(tmp_path / "e.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    with pytest.raises(InputError, match="cannot be read"):
        read_radiograph(tmp_path / "bad.png")
    (tmp_path / "bad.dcm").write_bytes(b"x" * 300)
    with pytest.raises(InputError):
        read_radiograph(tmp_path / "bad.dcm")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32)), str(tmp_path / "v.nrrd"))
    with pytest.raises(InputError, match="not a volume"):
        read_radiograph(tmp_path / "v.nrrd")
    with pytest.raises(OptionError):
        write_radiograph(np.zeros((4, 4)), None, tmp_path / "x.dcm")
    with pytest.raises(OptionError):
        write_radiograph(np.zeros((4, 4)), 1.0, tmp_path / "x.bmp")
