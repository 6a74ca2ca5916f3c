"""CT input: a DICOM series folder, NIfTI, NRRD or MHA/MHD file -> :class:`dxr_core.volume.Volume` in HU.

DICOM series are read with pydicom (headers, pixel data, rescale) and checked before any pixel is trusted:
the CT series is chosen when a folder holds several series or modalities, slices are sorted by their position
projected on the slice normal (never by file name), oblique ``ImageOrientationPatient`` is kept as the volume's
direction matrix, and missing / duplicated slices, uneven spacing, mixed orientations, truncated files and
non-finite values are refused with one actionable sentence (:class:`dxr_core.errors.InputError`).
Volume files are read with SimpleITK.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from dxr_core.errors import InputError
from dxr_core.volume import Volume

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

# Patient / study / series tags carried from the CT to every output (DICOM keywords).
PATIENT_STUDY_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "PatientSize",
    "OtherPatientIDs", "EthnicGroup", "PatientComments",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "FrameOfReferenceUID", "IssuerOfPatientID",
)
SOURCE_SERIES_TAGS = (
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime", "Modality",
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "BodyPartExamined", "PatientPosition",
    "KVP", "SliceThickness", "ConvolutionKernel", "SpecificCharacterSet",
)

_POS_TOL_MM = 1e-3  # duplicate positions
_DIR_TOL = 1e-4  # orientation cosines that must agree across slices


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------
def read_ct(path: str | os.PathLike) -> Volume:
    """Read a CT from a DICOM series folder (or one of its files), NIfTI, NRRD or MHA/MHD file, in HU.

    Returns a :class:`Volume` whose ``meta`` holds ``source`` (the path given), ``format`` ("dicom", "nifti",
    "nrrd", "metaimage") and, for DICOM, ``dicom`` (patient/study/series tags as strings) and ``series``
    (number of slices, first file, the series chosen and the others skipped).
    Raises :class:`InputError` with a sentence naming the problem and the fix for every unusable input.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"CT path {str(p)!r} does not exist; check the spelling or give an existing DICOM folder "
                         "or NIfTI/NRRD/MHA file.")
    if p.is_dir():
        dicoms, volumes, others = _scan_folder(p)
        if dicoms:
            vol = _read_dicom_series(p, dicoms)
        elif len(volumes) == 1:
            vol = _read_volume_file(volumes[0])
        elif len(volumes) > 1:
            names = ", ".join(v.name for v in volumes[:4])
            raise InputError(f"Folder {str(p)!r} holds {len(volumes)} CT volume files ({names}...); give one file "
                             "with --ct, or the folder with --ct-dir to render them all.")
        elif others:
            raise InputError(f"Folder {str(p)!r} holds {len(others)} file(s) but none is a DICOM image or a "
                             "NIfTI/NRRD/MHA volume; give the folder that holds the CT series.")
        else:
            sub = [d for d in p.iterdir() if d.is_dir()]
            hint = " (it has sub-folders: use --ct-dir to render every CT below it)" if sub else ""
            raise InputError(f"Folder {str(p)!r} is empty{hint}; give a folder holding one CT DICOM series.")
    elif _has_suffix(p, VOLUME_SUFFIXES):
        vol = _read_volume_file(p)
    elif _is_dicom_file(p):
        # one file of a series: read the series it belongs to from its folder
        ds = _read_header(p)
        uid = str(getattr(ds, "SeriesInstanceUID", "")) if ds is not None and ds is not NOT_AN_IMAGE else ""
        dicoms, _, _ = _scan_folder(p.parent)
        vol = _read_dicom_series(p.parent, dicoms, series_uid=uid or None, named_file=p)
    else:
        vol = _read_volume_file(p)  # let SimpleITK try other formats; it raises InputError if it cannot
    vol.meta["source"] = str(p)
    return vol


def find_ct_inputs(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Every CT under ``root``: each folder that directly holds DICOM files, and each NIfTI/NRRD/MHA file.

    Sorted by path; hidden entries, ``exclude`` folders (e.g. the output folder) and temporary ``.part`` files
    are skipped. Raises :class:`InputError` when ``root`` is missing or not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"CT folder {str(root)!r} does not exist or is not a folder; give the folder that holds "
                         "the CT series and volume files.")
    excl = {Path(e).expanduser().resolve() for e in exclude}
    found: list[Path] = []
    seen: set[Path] = set()
    # followlinks: a folder of symlinks to series kept elsewhere is a common layout; `seen` stops link cycles
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        if d.resolve() in seen:
            dirnames[:] = []
            continue
        seen.add(d.resolve())
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in excl)
        has_dicom = False
        for name in sorted(filenames):
            if name.startswith(".") or ".part" in name:
                continue
            f = d / name
            if _has_suffix(f, VOLUME_SUFFIXES):
                found.append(f)
            elif not has_dicom and _is_dicom_file(f):
                has_dicom = True
        if has_dicom:
            found.append(d)
    return sorted(found)


# ----------------------------------------------------------------------------------------------------------------
# helpers: files
# ----------------------------------------------------------------------------------------------------------------
def _has_suffix(p: Path, suffixes: Iterable[str]) -> bool:
    name = p.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _is_dicom_file(p: Path) -> bool:
    """DICOM Part 10 preamble ('DICM' at byte 128), or a .dcm-like name (headerless files are still tried)."""
    try:
        if not p.is_file():
            return False
        with open(p, "rb") as fh:
            head = fh.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return True
    except OSError:
        return False
    return _has_suffix(p, DICOM_SUFFIXES)


def _scan_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    dicoms, volumes, others = [], [], []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if _has_suffix(f, VOLUME_SUFFIXES):
            volumes.append(f)
        elif _is_dicom_file(f):
            dicoms.append(f)
        else:
            others.append(f)
    return dicoms, volumes, others


NOT_AN_IMAGE = object()  # _read_header: a valid DICOM file that is not an image (e.g. DICOMDIR)


def _read_header(f: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=_has_suffix(f, DICOM_SUFFIXES))
            if not any(k in ds for k in ("SOPClassUID", "Modality", "SeriesInstanceUID")):
                # a DICOMDIR or other valid non-image object is skipped; a forced read of a non-DICOM file
                # (junk elements, no Part 10 header) counts as unreadable
                ms = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
                if ms is None or "Image" in str(getattr(ms, "name", "")):  # an image cut short: unreadable
                    return None
                return NOT_AN_IMAGE
            return ds
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError,
            NotImplementedError, OverflowError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# helpers: volume files
# ----------------------------------------------------------------------------------------------------------------
def _format_of(p: Path) -> str:
    n = p.name.lower()
    if n.endswith((".nii", ".nii.gz")):
        return "nifti"
    if n.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if n.endswith((".mha", ".mhd")):
        return "metaimage"
    return p.suffix.lstrip(".").lower() or "unknown"


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what ITK's C++ readers print straight to file descriptor 2 (e.g. MetaIO's "data not read
    completely"): the failure is reported once, as an InputError sentence."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _read_volume_file(p: Path) -> Volume:
    with _quiet_native_stderr():
        return _read_volume_file_loud(p)


def _read_volume_file_loud(p: Path) -> Volume:
    import SimpleITK as sitk

    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"CT file {str(p)!r} is empty (0 bytes); copy it again from its source.")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        size = reader.GetSize()
    except RuntimeError as err:
        raise InputError(f"CT file {str(p)!r} cannot be read ({_first_line(err)}); it is not a NIfTI/NRRD/MHA "
                         "volume or it is corrupt: export it again.") from None
    if dim == 2 or (dim >= 3 and sum(s > 1 for s in size) < 3):
        raise InputError(f"{str(p)!r} is a 2-D image {tuple(size)}, not a CT volume; give a 3-D CT "
                         "(DICOM series folder or NIfTI/NRRD/MHA volume).")
    if dim != 3:
        raise InputError(f"{str(p)!r} has {dim} dimensions {tuple(size)}; a CT volume has 3, so extract the "
                         "3-D CT (one time point / channel) first.")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{str(p)!r} has {reader.GetNumberOfComponents()} components per voxel (colour or "
                         "vector image); give a scalar CT volume in HU.")
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"CT file {str(p)!r} is truncated or corrupt ({_first_line(err)}); export or copy it "
                         "again.") from None
    if _format_of(p) == "nifti":
        _check_nifti_complete(p, reader)
    img = sitk.Cast(img, sitk.sitkFloat32)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
        raise InputError(f"The direction matrix in {str(p)!r} is not orthonormal; fix the file's header "
                         "(e.g. re-save it with SimpleITK or 3D Slicer).")
    vol = Volume.from_sitk(img, meta={"format": _format_of(p), "source": str(p)})
    _check_finite(vol.array, p)
    return vol


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # ITK messages end with the most telling line; a stale errno text ("No such file") on an existing file is noise
    msg = lines[-1] if lines else type(err).__name__
    if "No such file or directory" in msg or msg.startswith("Reason:") and len(msg) < 12:
        msg = "the image data could not be read completely"
    return msg[:160]


def _check_nifti_complete(p: Path, reader) -> None:
    """ITK zero-fills a truncated NIfTI silently: compare the data size the header promises with the file."""
    import gzip
    import zlib

    try:
        md = {k: reader.GetMetaData(k) for k in ("bitpix", "vox_offset", "dim[0]")}
        ndim = int(md["dim[0]"])
        n = 1
        for i in range(1, ndim + 1):
            n *= max(int(reader.GetMetaData(f"dim[{i}]")), 1)
        expected = int(float(md["vox_offset"])) + n * int(md["bitpix"]) // 8
    except (RuntimeError, ValueError, KeyError):
        return
    if p.name.lower().endswith(".gz"):
        got = 0
        try:
            with gzip.open(p, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    got += len(chunk)
        except (EOFError, OSError, zlib.error):
            got = -1
    else:
        got = p.stat().st_size
    if got < expected:
        raise InputError(f"CT file {str(p)!r} is truncated or corrupt (its data ends before the "
                         f"{expected} bytes its header announces); export or copy it again.")


def _check_finite(arr: np.ndarray, src: Path) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputError(f"CT {str(src)!r} holds {int(bad.sum())} NaN/infinite voxel value(s); fix or re-export "
                         "the CT so that every voxel is a finite HU value.")


# ----------------------------------------------------------------------------------------------------------------
# helpers: DICOM series
# ----------------------------------------------------------------------------------------------------------------
def _tag_str(ds, keyword: str) -> str | None:
    if keyword not in ds:
        return None
    val = ds.data_element(keyword).value
    if val is None:
        return ""
    if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue":
        return "\\".join(str(v) for v in val)
    return str(val)


def dicom_meta(ds) -> dict[str, str]:
    """Patient/study and source-series tags of a pydicom dataset as ``{keyword: str}`` (absent tags left out)."""
    out: dict[str, str] = {}
    for kw in PATIENT_STUDY_TAGS + SOURCE_SERIES_TAGS:
        v = _tag_str(ds, kw)
        if v is not None:
            out[kw] = v
    return out


def _floats(ds, keyword: str, n: int) -> np.ndarray | None:
    try:
        v = ds.data_element(keyword).value if keyword in ds else None
        if v is None:
            return None
        arr = np.asarray([float(x) for x in (v if n > 1 else [v])], dtype=np.float64)
        return arr if arr.size == n and np.all(np.isfinite(arr)) else None
    except (TypeError, ValueError):
        return None


def _is_localizer(ds) -> bool:
    it = [str(x).upper() for x in (getattr(ds, "ImageType", None) or [])]
    return "LOCALIZER" in it


def _read_dicom_series(folder: Path, files: list[Path], series_uid: str | None = None,
                       named_file: Path | None = None) -> Volume:
    headers: list[tuple[Path, Any]] = []
    unreadable: list[Path] = []
    for f in files:
        ds = _read_header(f)
        if ds is None:
            unreadable.append(f)
        elif ds is not NOT_AN_IMAGE:
            headers.append((f, ds))
    if not headers and not unreadable:
        raise InputError(f"The DICOM files in {str(folder)!r} hold no images (e.g. only a DICOMDIR); give the "
                         "folder that holds the CT slices.")
    if not headers:
        raise InputError(f"None of the {len(files)} DICOM-looking file(s) in {str(folder)!r} can be read (first: "
                         f"{unreadable[0].name!r}); they are corrupt or not DICOM: export the series again.")

    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for f, ds in headers:
        series[str(getattr(ds, "SeriesInstanceUID", "") or "<no SeriesInstanceUID>")].append((f, ds))

    def modality(items) -> str:
        return str(getattr(items[0][1], "Modality", "") or "").upper()

    def is_ct(items) -> bool:
        ds = items[0][1]
        sop = str(getattr(ds, "SOPClassUID", ""))
        return modality(items) == "CT" or sop in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1")

    if series_uid and series_uid in series:
        chosen_uid = series_uid
        if not is_ct(series[chosen_uid]):
            raise InputError(f"{str(named_file or folder)!r} belongs to a {modality(series[chosen_uid]) or 'non-CT'} "
                             "series, not a CT; give the CT series (Modality CT).")
    else:
        ct = {uid: items for uid, items in series.items() if is_ct(items)}
        if not ct:
            found = sorted({modality(items) or "unknown" for items in series.values()})
            raise InputError(f"Folder {str(folder)!r} holds no CT series (modalities found: {', '.join(found)}); "
                             "give a folder with a CT series (Modality CT).")

        def n_axial(items):
            return sum(1 for _, ds in items if not _is_localizer(ds))

        chosen_uid = max(ct, key=lambda u: (n_axial(ct[u]), u))
    items = [(f, ds) for f, ds in series[chosen_uid] if not _is_localizer(ds)]
    skipped = {uid: f"{modality(it) or '?'} x{len(it)}" for uid, it in series.items() if uid != chosen_uid}
    if not items:
        raise InputError(f"The CT series in {str(folder)!r} holds only localizer (scout) images; give the axial "
                         "CT series.")
    if unreadable:
        # a corrupt file might be a slice of this series: refuse rather than silently leave a hole
        raise InputError(f"DICOM file {str(unreadable[0])!r} in the CT folder cannot be read (truncated or "
                         "corrupt); replace it, or remove it if it is not part of the CT series.")
    return _assemble_series(folder, items, chosen_uid, skipped)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _assemble_series(folder: Path, items: list[tuple[Path, Any]], uid: str, skipped: dict[str, str]) -> Volume:
    where = f"the CT series in {str(folder)!r}"
    if len(items) == 1 and int(getattr(items[0][1], "NumberOfFrames", 1) or 1) > 1:
        return _read_multiframe(items[0][0], items[0][1])
    if len(items) < 2:
        raise InputError(f"{_cap(where)} has a single slice, i.e. a 2-D image; give a CT series with many "
                         "slices (a radiograph or one slice cannot be projected).")

    iops, ipps, pss, shapes = [], [], [], []
    for f, ds in items:
        iop = _floats(ds, "ImageOrientationPatient", 6)
        ipp = _floats(ds, "ImagePositionPatient", 3)
        ps = _floats(ds, "PixelSpacing", 2)
        if iop is None or ipp is None or ps is None:
            missing = [k for k, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp),
                                      ("PixelSpacing", ps)) if v is None]
            raise InputError(f"Slice {f.name!r} of {where} lacks a valid {', '.join(missing)}; the slices cannot "
                             "be placed in space, so export the series again with full geometry.")
        if np.any(ps <= 0):
            raise InputError(f"Slice {f.name!r} of {where} has a non-positive PixelSpacing {list(ps)}; fix the "
                             "DICOM header.")
        iops.append(iop)
        ipps.append(ipp)
        pss.append(ps)
        shapes.append((int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)))
    iops_a, ipps_a, pss_a = np.array(iops), np.array(ipps), np.array(pss)

    # consistency: orientation, pixel spacing, matrix size
    if np.abs(iops_a - iops_a[0]).max() > _DIR_TOL:
        k = int(np.argmax(np.abs(iops_a - iops_a[0]).max(axis=1)))
        raise InputError(f"{_cap(where)} mixes slice orientations (slice {items[k][0].name!r} differs from "
                         f"{items[0][0].name!r}); give a single-orientation series or split it.")
    if np.abs(pss_a - pss_a[0]).max() > 1e-4 * max(1.0, float(pss_a[0].max())):
        k = int(np.argmax(np.abs(pss_a - pss_a[0]).max(axis=1)))
        raise InputError(f"{_cap(where)} has inconsistent pixel spacing ({list(pss_a[0])} vs {list(pss_a[k])} "
                         f"mm in {items[k][0].name!r}); resample it to one spacing or give a consistent series.")
    if len(set(shapes)) != 1 or shapes[0][0] < 1 or shapes[0][1] < 1:
        raise InputError(f"{_cap(where)} has slices of different or empty matrix sizes {sorted(set(shapes))}; "
                         "give a consistent series.")

    row_dir, col_dir = iops_a[0][:3], iops_a[0][3:]
    nr, nc = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(float(row_dir @ col_dir)) > 1e-3:
        raise InputError(f"{_cap(where)} has an invalid ImageOrientationPatient {list(iops_a[0])} (not two "
                         "orthogonal unit vectors); fix the DICOM header.")
    row_dir, col_dir = row_dir / nr, col_dir / nc
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    col_dir /= np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)

    # sort by position along the slice normal (not by file name or InstanceNumber)
    z = ipps_a @ normal
    order = np.argsort(z, kind="stable")
    z_sorted = z[order]
    ipps_sorted = ipps_a[order]
    names = [items[i][0].name for i in order]
    dz = np.diff(z_sorted)
    dup = np.flatnonzero(dz < _POS_TOL_MM)
    if dup.size:
        i = int(dup[0])
        raise InputError(f"{_cap(where)} has duplicated slices at the same position ({names[i]!r} and "
                         f"{names[i + 1]!r} at {z_sorted[i]:.2f} mm along the normal); remove the duplicates or "
                         "keep one acquisition.")
    step = float(np.median(dz))
    ratio = dz / step
    gaps = np.flatnonzero(ratio > 1.5)
    if gaps.size:
        i = int(gaps[0])
        n_missing = int(round(ratio[i])) - 1
        raise InputError(f"{_cap(where)} is missing {max(n_missing, 1)} slice(s) between {names[i]!r} and "
                         f"{names[i + 1]!r} (gap of {dz[i]:.2f} mm where slices are {step:.2f} mm apart); copy the "
                         "complete series.")
    tol = max(0.01, 0.02 * step)
    if np.abs(dz - step).max() > tol:
        i = int(np.argmax(np.abs(dz - step)))
        raise InputError(f"{_cap(where)} has uneven slice spacing ({dz[i]:.3f} mm between {names[i]!r} and "
                         f"{names[i + 1]!r}, {step:.3f} mm elsewhere); resample it to a regular grid first.")
    # in-plane drift of positions = gantry tilt / sheared stack: a Volume cannot represent it
    inplane = (ipps_sorted - ipps_sorted[0]) - np.outer(z_sorted - z_sorted[0], normal)
    drift = float(np.linalg.norm(inplane, axis=1).max())
    if drift > max(0.05, 0.05 * step * len(order)) and drift > 0.5 * float(pss_a[0].min()):
        raise InputError(f"{_cap(where)} is sheared (slice positions drift {drift:.2f} mm sideways, e.g. gantry "
                         "tilt), so its orientation and positions disagree; resample it to an orthogonal grid first.")
    spacing_z = float((z_sorted[-1] - z_sorted[0]) / (len(order) - 1))

    # pixel data, per slice, with its own rescale
    rows, cols = shapes[0]
    arr = np.empty((len(order), rows, cols), dtype=np.float32)
    for out_k, i in enumerate(order):
        f = items[i][0]
        arr[out_k] = _slice_pixels(f, rows, cols)
    _check_finite(arr, folder)

    ds0 = items[order[0]][1]
    direction = np.column_stack([row_dir, col_dir, normal])
    ps = pss_a[0]  # DICOM: [row spacing (between rows, along col_dir), column spacing (along row_dir)]
    meta: dict[str, Any] = {
        "format": "dicom",
        "dicom": dicom_meta(ds0),
        "series": {
            "SeriesInstanceUID": uid,
            "n_slices": len(order),
            "first_file": str(items[order[0]][0]),
            "skipped_series": skipped,
        },
    }
    return Volume(array=arr, spacing=(float(ps[1]), float(ps[0]), spacing_z), origin=tuple(ipps_sorted[0]),
                  direction=direction, meta=meta)


def _slice_pixels(f: Path, rows: int, cols: int) -> np.ndarray:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(f))
    except Exception as err:  # pydicom raises many types on damaged files
        raise InputError(f"DICOM file {str(f)!r} is truncated or corrupt ({type(err).__name__}); replace it with an "
                         "intact copy of the slice.") from None
    if "PixelData" not in ds:
        raise InputError(f"DICOM file {str(f)!r} has no pixel data (truncated or header-only); replace it with an "
                         "intact copy of the slice.")
    pix = None
    try:
        ts = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
        if ts is None or not ts.is_compressed:
            bits = int(ds.BitsAllocated)
            spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            expected = rows * cols * spp * bits // 8
            if len(ds.PixelData) < expected:
                raise InputError(f"DICOM file {str(f)!r} is truncated (pixel data {len(ds.PixelData)} of {expected} "
                                 "bytes); replace it with an intact copy of the slice.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pix = ds.pixel_array
    except InputError:
        raise
    except Exception:
        pix = None
    if pix is None:  # compressed syntax without a pydicom handler: GDCM (SimpleITK) decodes and rescales itself
        import SimpleITK as sitk

        try:
            img = sitk.ReadImage(str(f), sitk.sitkFloat32)
            out = sitk.GetArrayFromImage(img).astype(np.float32).reshape(-1, rows, cols)[0]
            return out
        except RuntimeError:
            raise InputError(f"Pixel data of DICOM file {str(f)!r} cannot be decoded (truncated, corrupt or an "
                             "unsupported compression); replace it or export the series uncompressed.") from None
    if pix.ndim != 2 or pix.shape != (rows, cols):
        raise InputError(f"DICOM file {str(f)!r} holds pixel data of shape {pix.shape}, not one {rows}x{cols} "
                         "grey-level slice; give a plain CT series.")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pix.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _read_multiframe(f: Path, ds) -> Volume:
    """Enhanced / multi-frame CT in one file: SimpleITK (GDCM) builds the geometry."""
    vol = _read_volume_file(f)
    vol.meta.update({"format": "dicom", "dicom": dicom_meta(ds),
                     "series": {"SeriesInstanceUID": str(getattr(ds, "SeriesInstanceUID", "")),
                                "n_slices": vol.array.shape[0], "first_file": str(f), "skipped_series": {}}})
    return vol
