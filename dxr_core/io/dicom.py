"""DICOM writers built with pydicom: a CT Image series from a Volume, and Digital X-Ray (DX) images.

The DX image is "Digital X-Ray Image Storage - For Presentation" (1.2.840.10008.5.1.4.1.1.1.1), MONOCHROME2,
16 bits, with the Patient, General Study, General Series, DX Series, General Equipment, General Image,
Image Pixel, Acquisition Context, DX Anatomy Imaged, DX Image, DX Detector, DX Positioning, VOI LUT and
SOP Common modules filled; it passes ``dciodvfy`` without errors. Every write is atomic.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dxr_core.errors import OptionError
from dxr_core.io.atomic import atomic_path
from dxr_core.volume import Volume

DX_PRESENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's root (valid, registered to pydicom)
IMPLEMENTATION_VERSION = "DXR_0.1"
MANUFACTURER = "DiffusionXRay"

# SNOMED CT codes (CID 4010 "DX View") for View Code Sequence, by DICOM ViewPosition
_VIEW_CODES = {
    "PA": ("399348003", "postero-anterior"),
    "AP": ("399352003", "antero-posterior"),
    "LL": ("399173006", "left lateral"),
    "RL": ("399198007", "right lateral"),
}
# view names used by the DRR geometry -> DICOM ViewPosition
VIEW_POSITION = {"pa": "PA", "ap": "AP", "lateral": "LL", "lat": "LL", "llat": "LL", "ll": "LL",
                 "left_lateral": "LL", "rlat": "RL", "rl": "RL", "right_lateral": "RL"}

# Patient / study tags that a derived image carries over unchanged
CARRY_TAGS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "OtherPatientIDs", "EthnicGroup", "PatientComments",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription",
)


def _now() -> tuple[str, str]:
    t = _dt.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")


def _file_meta(sop_class: str, sop_instance: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_instance
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    fm.ImplementationVersionName = IMPLEMENTATION_VERSION
    return fm


def save_dataset_raw(ds, path: Path) -> Path:
    """Write ``ds`` to ``path`` directly (callers provide the atomicity, e.g. inside ``atomic_path``)."""
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(str(path), write_like_original=False)
    return Path(path)


def _save(ds, path: Path) -> Path:
    with atomic_path(path) as tmp:
        save_dataset_raw(ds, tmp)
    return Path(path)


def _clean(value: Any, vr_max: int | None = None) -> str:
    s = "" if value is None else str(value)
    return s[:vr_max] if vr_max else s


def _set_carry(ds, tags: Mapping[str, Any]) -> None:
    """Copy patient/study tags (strings) onto ``ds``; pydicom converts each to its VR."""
    from pydicom.datadict import dictionary_VR

    for kw in CARRY_TAGS:
        if kw in tags and tags[kw] is not None:
            val = str(tags[kw])
            vr = dictionary_VR(kw)
            if vr in ("DS", "IS") and val == "":
                continue
            if kw == "OtherPatientIDs" and "\\" in val:
                val = val.split("\\")
            try:
                setattr(ds, kw, val)
            except (ValueError, TypeError):
                continue


# ----------------------------------------------------------------------------------------------------------------
# CT series (tests, phantom export)
# ----------------------------------------------------------------------------------------------------------------
def write_ct_series(volume: Volume, out_dir: str | os.PathLike, tags: Mapping[str, Any] | None = None,
                    rescale_slope: float = 1.0, rescale_intercept: float = -1024.0,
                    file_names: list[str] | None = None, uid_seed: str | None = None,
                    replace_folder: bool = False) -> list[Path]:
    """Write ``volume`` (HU) as a CT Image Storage series, one file per slice (atomic writes).

    Slices are stored as unsigned 16-bit with ``RescaleSlope``/``RescaleIntercept`` and placed by
    ``ImagePositionPatient``/``ImageOrientationPatient`` from the volume's origin and (possibly oblique) direction.
    ``tags`` may give patient/study tags, ``SeriesInstanceUID``/``Modality``/``SeriesDescription``, and
    ``ImageType`` (list), ``ManufacturerModelName``, ``BodyPartExamined``, ``WindowCenter``/``WindowWidth``.
    ``file_names`` overrides the default ``slice_0000.dcm`` names (e.g. to shuffle the order on disk).
    ``uid_seed``: derive every UID from it (the same volume written twice gets the same UIDs); default new UIDs.
    ``replace_folder``: write the whole series under a temporary sibling and rename it into place, so that a
    killed run leaves either the old folder or the complete new series (a file at ``out_dir`` is refused).
    Returns the written paths in slice order.
    """
    from pydicom.dataset import FileDataset
    from pydicom.uid import generate_uid

    tags = dict(tags or {})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OptionError(f"{str(out)!r} is a file; give a folder for the DICOM series.")
    arr = np.asarray(volume.array, dtype=np.float64)
    nz, ny, nx = arr.shape
    stored = np.round((arr - rescale_intercept) / rescale_slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise OptionError("HU values do not fit 16 bits with this rescale slope/intercept; choose another rescale.")
    stored = stored.astype(np.uint16)

    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *parts]) if uid_seed is not None else generate_uid()

    d = np.asarray(volume.direction, dtype=np.float64)
    sx, sy, sz = volume.spacing
    study_uid = tags.get("StudyInstanceUID") or uid("study")
    series_uid = tags.get("SeriesInstanceUID") or uid("series")
    for_uid = tags.get("FrameOfReferenceUID") or uid("frame")
    date, time = _now()
    target = out
    if replace_folder:
        out.parent.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
        os.chmod(out, 0o755)  # mkdtemp makes it private; a series folder is an ordinary folder
    else:
        out.mkdir(parents=True, exist_ok=True)
    names = [file_names[k] if file_names else f"slice_{k:04d}.dcm" for k in range(nz)]
    try:
        for k in range(nz):
            sop = uid("sop", str(k))
            ds = FileDataset(None, {}, file_meta=_file_meta(tags.get("SOPClassUID", CT_IMAGE_SOP_CLASS), sop),
                             preamble=b"\0" * 128)
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = list(tags.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]))
            ds.SOPClassUID = tags.get("SOPClassUID", CT_IMAGE_SOP_CLASS)
            ds.SOPInstanceUID = sop
            ds.StudyDate = tags.get("StudyDate", date)
            ds.StudyTime = tags.get("StudyTime", time.split(".")[0])
            ds.ContentDate, ds.ContentTime = date, time
            ds.AccessionNumber = tags.get("AccessionNumber", "")
            ds.Modality = tags.get("Modality", "CT")
            ds.Manufacturer = MANUFACTURER
            if tags.get("ManufacturerModelName"):
                ds.ManufacturerModelName = tags["ManufacturerModelName"]
            ds.ReferringPhysicianName = tags.get("ReferringPhysicianName", "")
            ds.StudyDescription = tags.get("StudyDescription", "")
            ds.SeriesDescription = tags.get("SeriesDescription", "CT")
            ds.PatientName = tags.get("PatientName", "Anonymous")
            ds.PatientID = tags.get("PatientID", "DXR0000")
            ds.PatientBirthDate = tags.get("PatientBirthDate", "")
            ds.PatientSex = tags.get("PatientSex", "")
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = tags.get("StudyID", "1")
            ds.SeriesNumber = int(tags.get("SeriesNumber", 1))
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.PatientPosition = tags.get("PatientPosition", "HFS")
            if tags.get("BodyPartExamined"):
                ds.BodyPartExamined = tags["BodyPartExamined"]
            ds.KVP = tags.get("KVP", "120")
            ds.SliceThickness = f"{sz:.6g}"
            pos = np.asarray(volume.origin) + d[:, 2] * sz * k
            ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([d[:, 0], d[:, 1]])]
            ds.SliceLocation = f"{float(pos @ np.cross(d[:, 0], d[:, 1])):.6f}"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = ny, nx
            ds.PixelSpacing = [f"{sy:.8g}", f"{sx:.8g}"]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = f"{rescale_intercept:.6g}"
            ds.RescaleSlope = f"{rescale_slope:.6g}"
            ds.RescaleType = "HU"
            ds.WindowCenter = str(tags.get("WindowCenter", "40"))
            ds.WindowWidth = str(tags.get("WindowWidth", "400"))
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            _save(ds, out / names[k])
        if replace_folder:
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(out, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if replace_folder:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return [target / n for n in names]


# ----------------------------------------------------------------------------------------------------------------
# DX image
# ----------------------------------------------------------------------------------------------------------------
def _code_item(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    it.CodeMeaning = meaning
    return it


def to_uint16(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint16 = round(image * 65535) (values outside [0, 1] are clipped)."""
    img = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)


def build_dx_dataset(image: np.ndarray, imager_pixel_spacing_mm: tuple[float, float], info: Mapping[str, Any],
                     series_uid: str | None = None):
    """A DX For Presentation dataset (pydicom FileDataset) for a [0, 1] image (bone bright -> MONOCHROME2).

    ``imager_pixel_spacing_mm`` is (row, column) spacing at the detector. ``info`` (all keys optional):
    patient/study tags (see :data:`CARRY_TAGS`; StudyInstanceUID is kept when given), ``ViewPosition``
    (PA/AP/LL/RL), ``PatientOrientation`` (two strings, e.g. ("L", "F")), ``DistanceSourceToDetector`` and
    ``DistanceSourceToPatient`` in mm (PixelSpacing at the isocentre plane is then added with
    ``PixelSpacingCalibrationType`` GEOMETRY), ``KVP``, ``SeriesDescription``, ``DerivationDescription``,
    ``ImageType`` (list), ``SourceSOP`` ((class UID, instance UID) of the image it derives from),
    ``SeriesNumber``, ``InstanceNumber``, ``BodyPartExamined``. SOP Instance UID is always new; the
    Series Instance UID is ``series_uid`` or new (never taken from ``info``, which may describe a source image).
    """
    from pydicom.dataset import Dataset, FileDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 1:
        raise OptionError(f"A radiograph must be a 2-D image, got shape {img.shape}.")
    rs, cs = (float(imager_pixel_spacing_mm[0]), float(imager_pixel_spacing_mm[1]))
    if not (np.isfinite(rs) and np.isfinite(cs) and rs > 0 and cs > 0):
        raise OptionError(f"Pixel spacing {imager_pixel_spacing_mm} mm must be positive to write a DICOM DX.")
    pix = to_uint16(img)
    sop = generate_uid()
    series = str(series_uid or generate_uid())
    date, time = _now()

    ds = FileDataset(None, {}, file_meta=_file_meta(DX_PRESENTATION_SOP_CLASS, sop), preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192" if any(ord(c) > 127 for c in "".join(
        str(info.get(k, "")) for k in CARRY_TAGS)) else "ISO_IR 100"
    it = info.get("ImageType") or ["DERIVED", "PRIMARY"]
    ds.ImageType = list(it)
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = DX_PRESENTATION_SOP_CLASS
    ds.SOPInstanceUID = sop

    # Patient + General Study (type 2 attributes present even when empty)
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = date
    ds.StudyTime = time.split(".")[0]
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    _set_carry(ds, info)
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = generate_uid()

    # General Series + DX Series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = int(info.get("SeriesNumber", 900) or 900)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = _clean(info.get("SeriesDescription", "DRR"), 64)
    ds.BodyPartExamined = _clean(info.get("BodyPartExamined", "CHEST"), 16)
    ds.PresentationIntentType = "FOR PRESENTATION"

    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = IMPLEMENTATION_VERSION

    # General Image
    ds.InstanceNumber = int(info.get("InstanceNumber", 1) or 1)
    po = info.get("PatientOrientation")
    ds.PatientOrientation = list(po) if po else ["", ""]
    ds.ContentDate, ds.ContentTime = date, time
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if info.get("DerivationDescription"):
        ds.DerivationDescription = _clean(info["DerivationDescription"], 1024)
    src = info.get("SourceSOP")
    if src:
        s = Dataset()
        s.ReferencedSOPClassUID, s.ReferencedSOPInstanceUID = str(src[0]), str(src[1])
        ds.SourceImageSequence = Sequence([s])

    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pix.shape[0]), int(pix.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0

    # Acquisition Context (type 2 sequence, empty)
    ds.AcquisitionContextSequence = Sequence([])

    # DX Anatomy Imaged
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = Sequence([_code_item("51185008", "SCT", "Chest")])

    # DX Image
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionDeviceProcessingDescription = _clean(info.get("AcquisitionDeviceProcessingDescription",
                                                                "Digitally reconstructed radiograph"), 64)

    # DX Detector
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorDescription = "Simulated flat-panel detector (DRR)"
    ds.ImagerPixelSpacing = [f"{rs:.10g}", f"{cs:.10g}"]
    sid = info.get("DistanceSourceToDetector")
    sad = info.get("DistanceSourceToPatient")
    if sid and sad and float(sid) > 0 and float(sad) > 0:
        mag = float(sid) / float(sad)
        ds.DistanceSourceToDetector = f"{float(sid):.10g}"
        ds.DistanceSourceToPatient = f"{float(sad):.10g}"
        ds.EstimatedRadiographicMagnificationFactor = f"{mag:.10g}"
        ds.PixelSpacing = [f"{rs / mag:.10g}", f"{cs / mag:.10g}"]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Isocentre plane: ImagerPixelSpacing/(SID/SAD)"

    # DX Positioning
    vp = str(info.get("ViewPosition") or "").upper()
    vp = VIEW_POSITION.get(vp.lower(), vp)
    ds.ViewPosition = vp if vp in _VIEW_CODES else ""
    if vp in _VIEW_CODES:
        code, meaning = _VIEW_CODES[vp]
        v = _code_item(code, "SCT", meaning)
        v.ViewModifierCodeSequence = Sequence([])
        ds.ViewCodeSequence = Sequence([v])
    ds.PatientPosition = ""
    ds.PositionerType = "NONE"
    if info.get("KVP"):
        ds.KVP = f"{float(info['KVP']):.6g}"

    # VOI LUT: window over the body (1st..99.5th percentile of the image), in stored values
    lo, hi = np.percentile(pix, [1.0, 99.5]) if pix.size > 1 else (0.0, 65535.0)
    if hi - lo < 2:
        lo, hi = 0.0, 65535.0
    ds.WindowCenter = f"{(lo + hi) / 2.0:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 2.0):.1f}"
    ds.WindowCenterWidthExplanation = "BODY"
    ds.VOILUTFunction = "LINEAR"

    ds.PixelData = np.ascontiguousarray(pix).tobytes()
    return ds


def write_dx(path: str | os.PathLike, image: np.ndarray, imager_pixel_spacing_mm: tuple[float, float],
             info: Mapping[str, Any], series_uid: str | None = None) -> Path:
    """Build with :func:`build_dx_dataset` and save atomically to ``path``."""
    return _save(build_dx_dataset(image, imager_pixel_spacing_mm, info, series_uid), Path(path))
