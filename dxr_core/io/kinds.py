"""What kind of input a file is, from its name and header only: one place for suffix lists and DICOM sniffing.

``input_kind(path)`` is "ct" (a folder, a 3-D volume file, a CT DICOM file) or "radiograph" (one 2-D image);
``is_dicom`` and ``holds_dicom`` recognise DICOM files and series folders by suffix or the 'DICM' preamble.
"""
from __future__ import annotations

import os

from dxr_core.errors import InputError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
RADIOGRAPH_MODALITIES = ("DX", "CR", "RG", "MG", "XA", "RF", "PX", "IO", "OT")


def input_kind(path: str) -> str:
    """"ct" (a folder, a 3-D volume file or a CT DICOM file) or "radiograph" (one 2-D image), from headers only."""
    if os.path.isdir(path):
        return "ct"
    name = os.path.basename(path).lower()
    if name.endswith(RASTER_SUFFIXES):
        return "radiograph"
    if name.endswith(VOLUME_SUFFIXES):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"{os.path.basename(path)!r} cannot be read: the file is truncated or corrupt; "
                             "write or upload it again.") from None
        size = reader.GetSize()
        if len(size) == 2 or (len(size) == 3 and size[2] == 1):
            return "radiograph"
        return "ct"
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            raise InputError(f"{os.path.basename(path)!r} is not a readable DICOM file (truncated or corrupt); "
                             "write or upload it again.") from None
        modality = str(getattr(ds, "Modality", "")).upper()
        if modality in RADIOGRAPH_MODALITIES and int(getattr(ds, "NumberOfFrames", 1) or 1) == 1:
            return "radiograph"
        return "ct"
    return "ct"  # let the CT reader decide and explain


def is_dicom(path: str) -> bool:
    """A DICOM file by suffix or by the 'DICM' preamble at byte 128."""
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fp:
            fp.seek(128)
            return fp.read(4) == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: str, probe: int = 8) -> bool:
    """True when ``folder`` directly holds DICOM files (by suffix or the 'DICM' preamble of a few files)."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return False
    for e in entries[:probe]:
        if e.name.lower().endswith(DICOM_SUFFIXES):
            return True
        try:
            with open(e.path, "rb") as fp:
                fp.seek(128)
                if fp.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False
