"""Write a Volume (HU) as a CT Image Storage DICOM series (one file per slice) with pydicom.

Stored values are unsigned 16-bit ``HU + 1024`` with RescaleIntercept -1024 / RescaleSlope 1 (clipped to
-1024..64511 HU), as many scanners do. The whole folder is written under a temporary name and renamed into
place, so a killed run leaves either the old folder or the complete new series.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dxr_core.errors import OptionError
from dxr_core.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom_series(volume: Volume, folder, series_description: str | None = None,
                       seed_uid: str | None = None) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--out {str(folder)!r} is a file; with --dicom give a folder for the series.")
    meta = volume.meta or {}
    key = seed_uid or f"{meta.get('PatientID', 'DXR')}-{volume.array.shape}-{volume.spacing}"
    study_uid = generate_uid(entropy_srcs=[key, "study"])
    series_uid = generate_uid(entropy_srcs=[key, "series"])
    frame_uid = generate_uid(entropy_srcs=[key, "frame"])
    now = _dt.datetime.now()
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    d = volume.direction
    row_dir, col_dir = d[:, 0], d[:, 1]  # index i runs along a row, j down a column
    sx, sy, sz = volume.spacing
    arr = np.clip(np.rint(volume.array + 1024.0), 0, 65535).astype(np.uint16)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a series folder is an ordinary folder
    try:
        for k in range(arr.shape[0]):
            fm = FileMetaDataset()
            fm.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            sop_uid = generate_uid(entropy_srcs=[key, "sop", str(k)])
            fm.MediaStorageSOPInstanceUID = sop_uid
            fm.TransferSyntaxUID = ExplicitVRLittleEndian
            fm.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
            ds = FileDataset(None, {}, file_meta=fm, preamble=b"\0" * 128)
            ds.is_little_endian = True
            ds.is_implicit_VR = False
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.Modality = "CT"
            ds.Manufacturer = "DiffusionXRay"
            ds.ManufacturerModelName = "dxr phantom"
            ds.PatientName = str(meta.get("PatientName", "DXR^Phantom"))
            ds.PatientID = str(meta.get("PatientID", "DXR-PHANTOM"))
            ds.PatientBirthDate = ""
            ds.PatientSex = str(meta.get("PatientSex", "O"))
            ds.PatientPosition = str(meta.get("PatientPosition", "HFS"))
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.AcquisitionNumber = 1
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time_
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = str(meta.get("StudyDescription", "DiffusionXRay phantom"))
            ds.SeriesDescription = series_description or str(meta.get("SeriesDescription", "Chest phantom"))
            ds.BodyPartExamined = "CHEST"
            ds.SeriesNumber = 1
            ds.InstanceNumber = k + 1
            ds.KVP = 120
            pos = volume.index_to_world(np.array([[0.0, 0.0, float(k)]]))[0]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([row_dir, col_dir])]
            ds.SliceLocation = f"{float(pos @ np.cross(row_dir, col_dir)):.6f}"
            ds.SliceThickness = f"{sz:.6g}"
            ds.SpacingBetweenSlices = f"{sz:.6g}"
            ds.PixelSpacing = [f"{sy:.6g}", f"{sx:.6g}"]  # row spacing (between rows), column spacing
            ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "-600"
            ds.WindowWidth = "1500"
            ds.PixelData = np.ascontiguousarray(arr[k]).tobytes()
            ds.save_as(tmp / f"CT{k + 1:04d}.dcm", write_like_original=False)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
