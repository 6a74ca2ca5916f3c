"""Radiograph folder dataset (formats, bit depths, MONOCHROME1, RGB) and the patient-level split manifest."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxr_core.data.radiographs import (RadiographFolder, list_radiographs, load_radiograph, patient_split,
                                       read_manifest, resize_radiograph)
from dxr_core.errors import InputError, OptionError

SAMPLE = Path(__file__).parent / "data" / "real_cxr_sample"


def _write_dicom(path: Path, stored: np.ndarray, photometric: str, bits: int = 12) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "TEST-1"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PixelData = stored.astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, write_like_original=False)
    return path


def test_monochrome1_is_inverted_and_12bit_scaled(tmp_path):
    stored = np.zeros((8, 10), np.uint16)
    stored[:, 5:] = 4095  # 12-bit full scale on the right half
    stored[2, 2] = 1000
    m1 = load_radiograph(_write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))[0]
    m2, meta = load_radiograph(_write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2"))
    assert m1.dtype == np.float32 and m1.shape == (8, 10)
    np.testing.assert_allclose(m2[:, 5:], 1.0)  # divided by 2**12 - 1, not 65535
    np.testing.assert_allclose(m2[2, 2], 1000 / 4095, atol=1e-6)
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)  # MONOCHROME1: high stored value = dark
    assert m1[0, 0] == pytest.approx(1.0) and m1[0, 9] == pytest.approx(0.0)
    assert meta["spacing"] == (0.2, 0.2)
    it = RadiographFolder(tmp_path, files=["m1.dcm"], size=4)[0]  # 8 x 10 -> 3 x 4 content, padded to 4 x 4
    assert tuple(it["image"].shape) == (1, 4, 4)
    np.testing.assert_allclose(it["spacing"].numpy(), (0.2 * 8 / 3, 0.2 * 10 / 4), rtol=1e-6)


def test_png_8_and_16_bit_jpeg_and_rgb(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "a16.png")
    img16, _ = load_radiograph(tmp_path / "a16.png")
    np.testing.assert_allclose(img16, ramp16 / 65535.0, atol=1e-6)
    ramp8 = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(ramp8).save(tmp_path / "a8.png")
    np.testing.assert_allclose(load_radiograph(tmp_path / "a8.png")[0], ramp8 / 255.0, atol=1e-6)
    # JPEG, RGB-encoded grayscale: one channel in [0, 1]
    big = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1)).astype(np.uint8)
    Image.fromarray(np.stack([big] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    rgb, _ = load_radiograph(tmp_path / "rgb.jpg")
    assert rgb.shape == (64, 64) and rgb.dtype == np.float32
    assert np.abs(rgb - big / 255.0).max() < 0.05
    # the committed real RGB-encoded figure reads as the same grey as its first channel
    real = SAMPLE / "12941_2020_358_Fig1_HTML.png"
    with Image.open(real) as im:
        assert im.mode == "RGB"
        ch0 = np.asarray(im)[..., 0] / 255.0
    np.testing.assert_allclose(load_radiograph(real)[0], ch0, atol=1 / 255 + 1e-6)
    # rescale options
    pr, _ = load_radiograph(tmp_path / "a16.png", rescale="minmax")
    assert pr.min() == 0.0 and pr.max() == 1.0
    with pytest.raises(OptionError):
        load_radiograph(tmp_path / "a16.png", rescale="zscore")


def test_folder_dataset_on_real_sample():
    files = list_radiographs(SAMPLE)
    assert len(files) == 8 and all(f.suffix == ".png" for f in files)
    ds = RadiographFolder(SAMPLE, size=64)
    assert len(ds) == 8
    import torch

    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))  # items collate
    assert tuple(batch["image"].shape) == (4, 1, 64, 64) and tuple(batch["spacing"].shape) == (4, 2)
    for i in range(len(ds)):
        it = ds[i]
        x = it["image"]
        assert tuple(x.shape) == (1, 64, 64) and str(x.dtype) == "torch.float32"
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    # real chest radiographs are bone bright: the central (mediastinum) column is brighter than the lung fields
    img = RadiographFolder(SAMPLE).load(files.index(SAMPLE / "5f619d7e.png"))
    h, w = img.shape
    mid = img[h // 4: 3 * h // 4, w // 2 - w // 16: w // 2 + w // 16].mean()
    band = img[h // 4: 3 * h // 4]
    lungs = np.r_[band[:, w // 5: w // 3].ravel(), band[:, 2 * w // 3: 4 * w // 5].ravel()]
    assert mid > lungs.mean() + 0.05


def test_resize_pad_keeps_aspect():
    img = np.ones((100, 50), np.float32)
    out = resize_radiograph(img, 64, "pad")
    assert out.shape == (64, 64)
    assert out[:, :10].max() == 0.0 and out[:, 20:44].min() > 0.99  # 32 columns of image centred, air padded
    assert resize_radiograph(img, (30, 20)).shape == (30, 20)


def _patients(rows, split):
    return {r["patient_id"] for r in rows if r["split"] == split}


def test_patient_split_disjoint_deterministic_and_seeded(tmp_path):
    meta = SAMPLE / "metadata.csv"
    a = patient_split(meta, tmp_path / "a.csv", image_dir=SAMPLE, fractions=(0.5, 0.25, 0.25), seed=0)
    patient_split(meta, tmp_path / "b.csv", image_dir=SAMPLE, fractions=(0.5, 0.25, 0.25), seed=0)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert len(a) == 8 and {r["split"] for r in a} == {"train", "val", "test"}
    tr, va, te = (_patients(a, s) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == {"102", "219", "223", "225", "227", "329"}
    # both images of patients 219 and 223 land in the same split
    for pid in ("219", "223"):
        assert len({r["split"] for r in a if r["patient_id"] == pid}) == 1
    # another seed gives another assignment (for at least one of a few seeds)
    others = [patient_split(meta, tmp_path / f"s{s}.csv", image_dir=SAMPLE, fractions=(0.5, 0.25, 0.25), seed=s)
              for s in (1, 2, 3)]
    assert any([r["split"] for r in o] != [r["split"] for r in a] for o in others)
    assert read_manifest(tmp_path / "a.csv") == a
    # the dataset reads one split of the manifest
    ds = RadiographFolder(SAMPLE, manifest=tmp_path / "a.csv", split="test")
    assert {ds[i]["patient_id"] for i in range(len(ds))} == te
    with pytest.raises(OptionError):
        RadiographFolder(SAMPLE, manifest=tmp_path / "a.csv", split="holdout")


def test_patient_split_options_and_errors(tmp_path):
    # configurable columns; rows of absent images are dropped with image_dir
    (tmp_path / "imgs").mkdir()
    for n in ("x1.png", "x2.png", "x3.png", "x4.png"):
        shutil.copy(SAMPLE / "4d98e1de.png", tmp_path / "imgs" / n)
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "image"])
        w.writerows([["p1", "x1.png"], ["p1", "x2.png"], ["p2", "x3.png"], ["p3", "x4.png"], ["p4", "gone.png"]])
    rows = patient_split(tmp_path / "m.csv", tmp_path / "s.csv", image_dir=tmp_path / "imgs",
                         patient_column="subject", file_column="image", seed=5)
    assert [r["file"] for r in rows] == ["x1.png", "x2.png", "x3.png", "x4.png"]
    assert len({r["split"] for r in rows if r["patient_id"] == "p1"}) == 1
    with pytest.raises(InputError, match="no column 'patientid'"):
        patient_split(tmp_path / "m.csv", tmp_path / "s2.csv")
    with pytest.raises(InputError, match="cannot fill 3 splits"):
        patient_split(tmp_path / "m.csv", tmp_path / "s3.csv", patient_column="subject", file_column="image",
                      image_dir=_only(tmp_path, ["x1.png", "x2.png"]))  # one patient (p1) for three splits
    with pytest.raises(OptionError):
        patient_split(tmp_path / "m.csv", tmp_path / "s4.csv", fractions=(1, -1, 0), patient_column="subject",
                      file_column="image")
    assert not (tmp_path / "s3.csv").exists()


def _only(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "two_patients"
    d.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(SAMPLE / "4d98e1de.png", d / n)
    return d


def test_corrupt_file_is_an_input_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="cannot be read"):
        RadiographFolder(tmp_path)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No radiographs"):
        RadiographFolder(tmp_path / "empty")
