"""read_ct: DICOM series (sorting, rescale, oblique, series choice), NIfTI/NRRD/MHA, and every bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from dxr_core.errors import InputError
from dxr_core.io import find_ct_inputs, read_ct, write_ct_series
from dxr_core.volume import Volume

TAGS = {"PatientName": "Doe^Jane", "PatientID": "P0042", "PatientBirthDate": "19700101", "PatientSex": "F",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242", "StudyID": "S7", "StudyDate": "20240102",
        "StudyTime": "101500", "AccessionNumber": "ACC1", "ReferringPhysicianName": "Who^Doctor",
        "StudyDescription": "CT CHEST", "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.777"}


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_volume(nz: int = 10, ny: int = 32, nx: int = 30, direction=None, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:nz, :ny, :nx]
    arr = np.full((nz, ny, nx), -1000.0)
    body = ((y - ny / 2) / (ny * 0.4)) ** 2 + ((x - nx / 2) / (nx * 0.45)) ** 2 < 1
    arr[body] = 40
    arr[body & (np.abs(x - nx / 2) < 2)] = 700 + z[body & (np.abs(x - nx / 2) < 2)]  # varies along z
    arr += rng.integers(-5, 6, size=arr.shape)
    return Volume(arr.astype(np.float32), spacing=(0.8, 0.7, 2.5), origin=(-12.0, -30.5, 100.0),
                  direction=np.eye(3) if direction is None else direction)


def assert_same_geometry(a: Volume, b: Volume, atol: float = 1e-4) -> None:
    assert a.array.shape == b.array.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol * 10)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)
    np.testing.assert_allclose(a.corners_lps(), b.corners_lps(), atol=atol * 10)


@pytest.fixture
def series(tmp_path):
    vol = make_volume()
    folder = tmp_path / "ct"
    names = [f"IM{(k * 7) % 10:05d}" for k in range(10)]  # file-name order != slice order, no extension
    paths = write_ct_series(vol, folder, tags=TAGS, file_names=names)
    return vol, folder, paths


# ------------------------------------------------------------------------------------------------ good inputs
def test_dicom_series_sorted_by_position_with_tags(series):
    vol, folder, _ = series
    got = read_ct(folder)
    assert_same_geometry(got, vol)
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.array.dtype == np.float32
    d = got.meta["dicom"]
    for k, v in TAGS.items():
        assert d[k] == v, k
    assert got.meta["source"] == str(folder)
    assert got.meta["format"] == "dicom"
    assert got.meta["series"]["n_slices"] == 10


def test_sorting_ignores_instance_number_and_file_order(series):
    vol, folder, paths = series
    for p in paths:  # scramble InstanceNumber: position along the normal must win
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = 99 - int(ds.InstanceNumber) * 3 % 7
        ds.save_as(p)
    got = read_ct(folder)
    np.testing.assert_array_equal(got.array, vol.array)


def test_single_file_path_reads_its_series(series):
    vol, folder, paths = series
    got = read_ct(paths[3])
    np.testing.assert_array_equal(got.array, vol.array)


def test_rescale_slope_intercept_applied(tmp_path):
    vol = make_volume(nz=8)
    write_ct_series(vol, tmp_path / "s", rescale_slope=2.0, rescale_intercept=-2048.0)
    got = read_ct(tmp_path / "s")
    q = np.round((vol.array + 2048.0) / 2.0) * 2.0 - 2048.0
    np.testing.assert_array_equal(got.array, q)
    ds = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0])
    assert float(ds.RescaleSlope) == 2.0 and ds.pixel_array.min() >= 0


def test_oblique_dicom_matches_nifti_nrrd_mha(tmp_path):
    direction = _rot(0.3, -0.2, 0.5)
    vol = make_volume(nz=9, direction=direction)
    write_ct_series(vol, tmp_path / "dcm")
    from_dicom = read_ct(tmp_path / "dcm")
    assert_same_geometry(from_dicom, vol)
    np.testing.assert_array_equal(from_dicom.array, vol.array)
    for name in ("v.nii.gz", "v.nii", "v.nrrd", "v.mha"):
        sitk.WriteImage(from_dicom.to_sitk(), str(tmp_path / name))
        other = read_ct(tmp_path / name)
        assert_same_geometry(other, from_dicom)
        np.testing.assert_array_equal(other.array, from_dicom.array)
        assert other.meta["source"] == str(tmp_path / name)
    # a left-handed index frame (slices stored head->feet against the normal) reads as the same world geometry
    lh = make_volume(nz=9, direction=direction @ np.diag([1, 1, -1]))
    write_ct_series(lh, tmp_path / "lh")
    got = read_ct(tmp_path / "lh")
    np.testing.assert_allclose(np.sort(got.corners_lps(), axis=0), np.sort(lh.corners_lps(), axis=0), atol=1e-3)
    np.testing.assert_array_equal(got.array, lh.array[::-1])


def test_folder_with_several_series_picks_ct(tmp_path):
    folder = tmp_path / "mixed"
    vol = make_volume(nz=8)
    write_ct_series(vol, folder, tags=dict(TAGS))
    mr = make_volume(nz=12, seed=3)
    write_ct_series(mr, folder, tags={"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"},
                    file_names=[f"mr{k}.dcm" for k in range(12)])
    small_ct = make_volume(nz=3, seed=4)  # a second, smaller CT series (e.g. a reconstruction) is skipped
    write_ct_series(small_ct, folder, file_names=[f"b{k}.dcm" for k in range(3)])
    (folder / "notes.txt").write_text("not dicom")
    got = read_ct(folder)
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.meta["dicom"]["PatientID"] == "P0042"
    assert len(got.meta["series"]["skipped_series"]) == 2


def test_localizer_images_are_skipped(series):
    vol, folder, paths = series
    ds = pydicom.dcmread(paths[0])
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(folder / "scout.dcm")
    np.testing.assert_array_equal(read_ct(folder).array, vol.array)


def test_folder_with_one_volume_file(tmp_path):
    vol = make_volume(nz=8)
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ct.nrrd"))
    got = read_ct(tmp_path)
    assert_same_geometry(got, vol)


def test_find_ct_inputs(tmp_path):
    write_ct_series(make_volume(nz=8), tmp_path / "a" / "series1")
    sitk.WriteImage(make_volume(nz=8).to_sitk(), str(tmp_path / "b.nii.gz"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("x")
    out = tmp_path / "out"
    write_ct_series(make_volume(nz=8), out / "x")  # excluded
    found = find_ct_inputs(tmp_path, exclude=[out])
    assert found == [tmp_path / "a" / "series1", tmp_path / "b.nii.gz"]


def test_find_ct_inputs_follows_symlinked_series(tmp_path):
    write_ct_series(make_volume(nz=8), tmp_path / "store" / "series1")
    (tmp_path / "cts").mkdir()
    (tmp_path / "cts" / "patient1").symlink_to(tmp_path / "store" / "series1")
    (tmp_path / "cts" / "loop").symlink_to(tmp_path / "cts")  # a cycle must not hang or repeat
    assert find_ct_inputs(tmp_path / "cts") == [tmp_path / "cts" / "patient1"]


# ------------------------------------------------------------------------------------------------- bad inputs
def _err(path) -> str:
    with pytest.raises(InputError) as ei:
        read_ct(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.endswith(".") and len(msg) < 400
    return msg


def test_missing_path(tmp_path):
    assert "does not exist" in _err(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    assert "empty" in _err(tmp_path / "e")


def test_folder_of_non_image_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.csv").write_text("1,2")
    assert "none is a DICOM image" in _err(tmp_path)


def test_garbage_dcm_files(tmp_path):
    for k in range(3):
        (tmp_path / f"{k}.dcm").write_bytes(b"garbage" * 50)
    assert "corrupt or not DICOM" in _err(tmp_path)


def test_non_ct_modality(tmp_path):
    write_ct_series(make_volume(nz=8), tmp_path, tags={"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"})
    msg = _err(tmp_path)
    assert "no CT series" in msg and "MR" in msg


def test_cr_radiograph_only(tmp_path):
    from dxr_core.io import write_dx

    write_dx(tmp_path / "cr.dcm", np.zeros((16, 16)), (0.2, 0.2), {})
    msg = _err(tmp_path)
    assert "no CT series" in msg and "DX" in msg


def test_missing_slice(series):
    _, folder, paths = series
    paths[4].unlink()
    msg = _err(folder)
    assert "missing 1 slice" in msg


def test_duplicated_slice(series):
    _, folder, paths = series
    ds = pydicom.dcmread(paths[4])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "dup.dcm")
    assert "duplicated slices" in _err(folder)


def test_uneven_slice_spacing(series):
    _, folder, paths = series
    ds = pydicom.dcmread(paths[5])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.6]
    ds.save_as(paths[5])
    assert "uneven slice spacing" in _err(folder)


def test_inconsistent_pixel_spacing(series):
    _, folder, paths = series
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = [0.9, 0.8]
    ds.save_as(paths[2])
    assert "inconsistent pixel spacing" in _err(folder)


def test_inconsistent_orientation(series):
    _, folder, paths = series
    ds = pydicom.dcmread(paths[6])
    c, s = np.cos(0.1), np.sin(0.1)
    ds.ImageOrientationPatient = [c, s, 0, -s, c, 0]
    ds.save_as(paths[6])
    assert "mixes slice orientations" in _err(folder)


def test_sheared_gantry_tilt(series):
    _, folder, paths = series
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1] + 1.5 * k, pos[2]]
        ds.save_as(p)
    assert "sheared" in _err(folder)


def test_missing_geometry_tag(series):
    _, folder, paths = series
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    assert "ImagePositionPatient" in _err(folder)


def test_truncated_slice(series):
    _, folder, paths = series
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) - 700])
    assert "truncated" in _err(folder)


def test_truncated_header(series):
    _, folder, paths = series
    paths[3].write_bytes(paths[3].read_bytes()[:300])
    assert "cannot be read" in _err(folder)


def test_single_slice_is_2d(series):
    _, folder, paths = series
    for p in paths[1:]:
        p.unlink()
    assert "2-D" in _err(folder)


def test_2d_volume_file(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), str(tmp_path / "x.nrrd"))
    assert "2-D image" in _err(tmp_path / "x.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 20, 20), np.float32)), str(tmp_path / "y.nii.gz"))
    assert "2-D image" in _err(tmp_path / "y.nii.gz")


def test_nan_and_inf_values(tmp_path):
    vol = make_volume(nz=8)
    arr = vol.array.copy()
    arr[3, 4, 5] = np.nan
    arr[2, 2, 2] = np.inf
    for name in ("nan.nrrd", "nan.mha"):
        sitk.WriteImage(vol.with_array(arr).to_sitk(), str(tmp_path / name))
        assert "NaN/infinite" in _err(tmp_path / name)


def test_truncated_and_corrupt_volume_files(tmp_path):
    vol = make_volume(nz=8)
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ok.nii.gz"))
    data = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert "corrupt" in _err(tmp_path / "cut.nii.gz")
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ok.nii"))
    data = (tmp_path / "ok.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 100])
    assert "truncated" in _err(tmp_path / "cut.nii")
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ok.mha"))
    data = (tmp_path / "ok.mha").read_bytes()
    (tmp_path / "cut.mha").write_bytes(data[: len(data) - 100])
    assert "truncated" in _err(tmp_path / "cut.mha")
    sitk.WriteImage(vol.to_sitk(), str(tmp_path / "ok.nrrd"), useCompression=False)
    data = (tmp_path / "ok.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(data[: len(data) - 1000])
    assert "corrupt" in _err(tmp_path / "cut.nrrd")
    (tmp_path / "bad.mha").write_text("this is not a metaimage\n")
    assert "cannot be read" in _err(tmp_path / "bad.mha")
    (tmp_path / "zero.nii").write_bytes(b"")
    assert "empty" in _err(tmp_path / "zero.nii")


def test_copy_of_series_is_stable(series, tmp_path):
    """Reading does not modify the input folder."""
    _, folder, _ = series
    before = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
    read_ct(folder)
    shutil.copytree(folder, tmp_path / "copy")
    assert sorted((p.name, p.stat().st_size) for p in folder.iterdir()) == before


def test_rle_compressed_and_per_slice_rescale(series):
    from pydicom.uid import RLELossless

    vol, folder, paths = series
    ds = pydicom.dcmread(paths[2])  # this slice stored with its own rescale
    k = int(ds.InstanceNumber) - 1
    hu = vol.array[k].astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-3000"
    ds.PixelData = np.round((hu + 3000) / 2).astype(np.uint16).tobytes()
    ds.save_as(paths[2])
    ds = pydicom.dcmread(paths[5])
    ds.compress(RLELossless)
    ds.save_as(paths[5])
    got = read_ct(folder)
    expect = vol.array.copy()
    expect[k] = np.round((hu + 3000) / 2) * 2 - 3000
    np.testing.assert_array_equal(got.array, expect)


def test_dicomdir_beside_the_slices_is_ignored(series):
    from pydicom.dataset import Dataset, FileMetaDataset

    vol, folder, _ = series
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.FileSetID = "DXR"
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(folder / "DICOMDIR", write_like_original=False)
    np.testing.assert_array_equal(read_ct(folder).array, vol.array)
