"""`dxr phantom` writes NIfTI and DICOM series readable by our reader and SimpleITK."""
from __future__ import annotations

import numpy as np
import pytest

from dxr_core.cli import main


def test_phantom_nifti_and_dicom_roundtrip(tmp_path, capsys):
    import SimpleITK as sitk

    from dxr_core.io import read_ct
    from dxr_core.phantom import make_chest_phantom

    nii = tmp_path / "ct.nii.gz"
    assert main(["phantom", "--out", str(nii), "--seed", "2", "--spacing", "6"]) == 0
    ref = make_chest_phantom(2, spacing_mm=6.0)
    img = sitk.ReadImage(str(nii))
    assert np.allclose(sitk.GetArrayFromImage(img), ref.array, atol=1e-3)
    assert np.allclose(img.GetOrigin(), ref.origin)

    d = tmp_path / "series"
    assert main(["phantom", "--out", str(d), "--seed", "2", "--spacing", "6,6,8", "--dicom"]) == 0
    ref = make_chest_phantom(2, spacing_mm=(6, 6, 8))
    files = sorted(d.glob("*.dcm"))
    assert len(files) == ref.array.shape[0]
    assert not list(tmp_path.glob(".*part*"))  # no temporary leftovers
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(d)))
    s = r.Execute()
    assert np.allclose(s.GetSpacing(), (6, 6, 8), atol=1e-4)
    assert np.allclose(s.GetOrigin(), ref.origin, atol=1e-3)
    assert np.abs(sitk.GetArrayFromImage(s) - np.round(ref.array)).max() <= 1
    vol = read_ct(d)
    assert vol.array.shape == ref.array.shape
    assert np.abs(vol.array - np.round(ref.array)).max() <= 1
    assert np.allclose(vol.origin, ref.origin, atol=1e-3)
    import pydicom

    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.PatientID == "DXR-PHANTOM-2" and float(ds.RescaleIntercept) == -1024


def test_phantom_cli_errors(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path / "ct.txt")]) == 2
    assert "extension" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantom", "--out", str(tmp_path / "a.nii.gz"), "--spacing", "0,1,1"])


def test_phantom_dicom_passes_dciodvfy(tmp_path):
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    from dxr_core.phantom import make_chest_phantom, write_dicom_series

    d = write_dicom_series(make_chest_phantom(0, spacing_mm=10.0), tmp_path / "s")
    files = sorted(d.glob("*.dcm"))
    res = subprocess.run(["dciodvfy", str(files[0])], capture_output=True, text=True)
    assert "Error" not in res.stdout + res.stderr, res.stdout + res.stderr
    res = subprocess.run(["dcentvfy", *map(str, files)], capture_output=True, text=True)
    assert "Error" not in res.stdout + res.stderr, res.stdout + res.stderr
