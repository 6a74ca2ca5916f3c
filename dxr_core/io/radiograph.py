"""Radiograph output and input: DRR -> DICOM DX + 16-bit PNG + NRRD + JSON sidecar; read/write any radiograph.

Conventions: images are float32 in [0, 1], bone bright (MONOCHROME2). ``pixel_spacing_mm`` is (row, column)
spacing *at the detector* (DICOM ImagerPixelSpacing; the spacing of the DRR geometry). PNG stores
uint16 = round(image * 65535) plus the spacing in its pHYs chunk; NRRD stores the float image with its spacing.
The JSON sidecar (``<stem>.json``) is written last, so its presence marks a complete set of outputs.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from dxr_core.errors import InputError, OptionError
from dxr_core.io.atomic import atomic_path
from dxr_core.io.dicom import CARRY_TAGS, VIEW_POSITION, _save, build_dx_dataset, save_dataset_raw, to_uint16

FORMATS = ("dcm", "png", "nrrd", "json")
_EXT = {"dcm": ".dcm", "png": ".png", "nrrd": ".nrrd", "json": ".json"}
RADIOGRAPH_SUFFIXES = (".dcm", ".dicom", ".png", ".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".tif",
                       ".tiff", ".jpg", ".jpeg")
# DICOM attributes that describe the acquisition and are kept when a radiograph is re-written (e.g. enhanced)
_KEEP_DX = ("ViewPosition", "PatientOrientation", "DistanceSourceToDetector", "DistanceSourceToPatient", "KVP",
            "SeriesDescription", "BodyPartExamined", "ImageLaterality", "SeriesNumber")


# ----------------------------------------------------------------------------------------------------------------
# JSON helpers
# ----------------------------------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples, paths and nested containers -> plain JSON types (non-finite floats -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return str(obj)


def dumps_json(obj: Any) -> str:
    """JSON text of ``obj`` with numpy arrays/scalars, paths and ``to_dict()`` objects converted."""
    return json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# DRR output
# ----------------------------------------------------------------------------------------------------------------
def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """"dcm,png" or an iterable -> validated tuple in the canonical order (json always last)."""
    items = [f.strip().lower().lstrip(".") for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = ["dcm" if f in ("dicom", "dcm") else f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise OptionError(f"Unknown output format(s) {bad or formats!r}; choose from {', '.join(FORMATS)}.")
    return tuple(f for f in FORMATS if f in items)


def drr_output_paths(out_dir: str | os.PathLike, stem: str,
                     formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """{format: path} that :func:`write_drr` writes for this stem."""
    out = Path(out_dir)
    return {f: out / f"{stem}{_EXT[f]}" for f in parse_formats(formats)}


def _drr_spacing(drr) -> tuple[float, float]:
    ps = drr.geometry.pixel_spacing_mm
    ps = (ps, ps) if np.isscalar(ps) else tuple(ps)
    return float(ps[0]), float(ps[1])


def dx_info_from_drr(drr) -> dict[str, Any]:
    """The ``info`` mapping for :func:`dxr_core.io.dicom.build_dx_dataset` of a DRR (CT tags + geometry)."""
    meta = getattr(drr, "meta", None) or {}
    dic = dict(meta.get("dicom", {}) or {})
    g = drr.geometry
    phys = getattr(drr, "physics", None)
    view = str(getattr(g, "view", "") or "")
    info: dict[str, Any] = {k: dic[k] for k in CARRY_TAGS if k in dic}
    if not info.get("PatientID"):  # no patient (phantom, NIfTI): a stable pseudo-ID per source CT
        import hashlib

        key = str(meta.get("source") or meta.get("name") or "phantom")
        info["PatientID"] = "DXR-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:10].upper()
    info["ViewPosition"] = VIEW_POSITION.get(view.lower(), view.upper())
    po = getattr(g, "patient_orientation", None)
    if po:
        info["PatientOrientation"] = tuple(str(x) for x in po)
    info["DistanceSourceToDetector"] = float(g.sid_mm)
    info["DistanceSourceToPatient"] = float(g.sad_mm)
    mode = str(getattr(phys, "mode", "") or "")
    kvp = getattr(phys, "kvp", None)
    if mode != "mono" and kvp:
        info["KVP"] = float(kvp)
    energy = f"{getattr(phys, 'energy_kev', '')} keV mono" if mode == "mono" else f"{kvp} kVp"
    info["SeriesDescription"] = f"DRR {info['ViewPosition']} {energy}".strip()
    src_series = dic.get("SeriesInstanceUID")
    src = meta.get("source")
    info["DerivationDescription"] = (f"Digitally reconstructed radiograph of CT series {src_series}" if src_series
                                     else "Digitally reconstructed radiograph of "
                                          f"{Path(str(src)).name if src else 'a CT'}")
    info["ImageType"] = ["DERIVED", "PRIMARY"]
    return info


def write_drr(drr, out_dir: str | os.PathLike, stem: str, formats: str | Iterable[str] = FORMATS,
              extra_sidecar: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write a DRR as DICOM DX, 16-bit PNG, NRRD and/or a JSON sidecar; returns ``{format: path}``.

    ``drr`` is a :class:`dxr_core.drr.DRR` (``image`` in [0, 1], ``geometry``, ``physics``, ``meta`` of the source
    CT, ``sidecar()``). Every file is written atomically; the JSON sidecar (geometry, projection matrix, physics,
    source CT, file names, ``extra_sidecar``) is written last.
    """
    fmts = parse_formats(formats)
    paths = drr_output_paths(out_dir, stem, fmts)
    image = np.asarray(drr.image, dtype=np.float32)
    if image.ndim != 2:
        raise OptionError(f"The DRR image must be 2-D, got shape {image.shape}.")
    spacing = _drr_spacing(drr)
    info = dx_info_from_drr(drr)
    side_text = None
    if "json" in fmts:
        side = dict(drr.sidecar()) if hasattr(drr, "sidecar") else {}
        side.setdefault("pixel_spacing_mm", list(spacing))
        side["image_size"] = [int(image.shape[0]), int(image.shape[1])]
        side["outputs"] = {f: p.name for f, p in paths.items() if f != "json"}
        side["value_encoding"] = {"png": "uint16 = round(image * 65535)", "dcm": "uint16 = round(image * 65535), "
                                  "MONOCHROME2", "nrrd": "float32 image in [0, 1]"}
        if extra_sidecar:
            side.update(dict(extra_sidecar))
        side_text = dumps_json(side)
    dx = build_dx_dataset(image, spacing, info) if "dcm" in fmts else None
    # All files go to temporary names first and are renamed only when every one is complete; the sidecar is
    # entered first so that it is renamed last (ExitStack unwinds in reverse): a killed or failed run never
    # leaves a half file, nor a sidecar that describes images which were not written.
    with contextlib.ExitStack() as stack:
        tmps = {f: stack.enter_context(atomic_path(paths[f])) for f in ("json", "nrrd", "png", "dcm") if f in fmts}
        if dx is not None:
            save_dataset_raw(dx, tmps["dcm"])
        if "png" in fmts:
            _png_raw(image, spacing, tmps["png"])
        if "nrrd" in fmts:
            _sitk_2d_raw(image, spacing, tmps["nrrd"], {"dxr_kind": "drr", "dxr_view": info["ViewPosition"]})
        if side_text is not None:
            tmps["json"].write_text(side_text, encoding="utf-8")
    return {f: paths[f] for f in fmts}


def _png_raw(image: np.ndarray, spacing: tuple[float, float] | None, path: Path) -> None:
    from PIL import Image

    im = Image.fromarray(to_uint16(image))
    kw = {}
    if spacing:
        kw["dpi"] = (25.4 / float(spacing[1]), 25.4 / float(spacing[0]))  # (x = columns, y = rows)
    im.save(str(path), format="PNG", **kw)


def _write_png(image: np.ndarray, spacing: tuple[float, float] | None, path: Path) -> Path:
    with atomic_path(path) as tmp:
        _png_raw(image, spacing, tmp)
    return Path(path)


def _sitk_2d_raw(image: np.ndarray, spacing: tuple[float, float] | None, path: Path,
                 keys: Mapping[str, str] | None = None) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(image, dtype=np.float32)))
    if spacing:
        img.SetSpacing((float(spacing[1]), float(spacing[0])))  # SimpleITK (x = columns, y = rows)
    for k, v in (keys or {}).items():
        img.SetMetaData(str(k), str(v))
    sitk.WriteImage(img, str(path), useCompression=True)


def _write_sitk_2d(image: np.ndarray, spacing: tuple[float, float] | None, path: Path,
                   keys: Mapping[str, str] | None = None) -> Path:
    with atomic_path(path) as tmp:
        _sitk_2d_raw(image, spacing, tmp, keys)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# generic radiograph I/O (the enhancer reads DRRs / real radiographs and writes its results with these)
# ----------------------------------------------------------------------------------------------------------------
def _stem(p: Path) -> str:
    n = p.name
    for s in sorted(RADIOGRAPH_SUFFIXES + (".json",), key=len, reverse=True):
        if n.lower().endswith(s):
            return n[: -len(s)]
    return p.stem


def _sidecar_for(p: Path) -> dict[str, Any] | None:
    j = p.with_name(_stem(p) + ".json")
    if j.is_file():
        try:
            return json.loads(j.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return None


def read_radiograph(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
    """Read a radiograph (DICOM, PNG/TIFF/JPEG, NRRD/MHA/NIfTI 2-D) -> (image, pixel_spacing_mm, meta).

    ``image`` is float32 (rows, cols) in [0, 1], bone bright (MONOCHROME1 is inverted; integers are divided by
    their full range, e.g. 2**BitsStored - 1 or 65535 for 16-bit PNG). ``pixel_spacing_mm`` is (row, col) at the
    detector (ImagerPixelSpacing, else PixelSpacing; the PNG pHYs chunk or a ``<stem>.json`` sidecar), or None
    when unknown. ``meta``: ``format``, ``source``, ``dicom`` (patient/study tags and acquisition attributes,
    usable as ``template_meta`` of :func:`write_radiograph`), ``sidecar`` (the JSON sidecar next to the file,
    if any), ``spacing_source``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Radiograph {str(p)!r} does not exist; check the path.")
    if p.stat().st_size == 0:
        raise InputError(f"Radiograph {str(p)!r} is empty (0 bytes); write or copy it again.")
    name = p.name.lower()
    if name.endswith((".png", ".tif", ".tiff", ".jpg", ".jpeg")):
        img, spacing, meta = _read_pil(p)
    elif name.endswith((".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz")):
        img, spacing, meta = _read_sitk_2d(p)
    else:
        img, spacing, meta = _read_dicom_2d(p)
    side = _sidecar_for(p)
    if side is not None:
        meta["sidecar"] = side
        if spacing is None or meta.get("spacing_source") == "png-phys":
            ps = side.get("pixel_spacing_mm") or (side.get("geometry") or {}).get("pixel_spacing_mm")
            if ps is not None:
                ps = [ps, ps] if np.isscalar(ps) else list(ps)
                if len(ps) == 2 and img.shape == tuple(side.get("image_size", img.shape)):
                    spacing = (float(ps[0]), float(ps[1]))
                    meta["spacing_source"] = "sidecar"
    if not np.all(np.isfinite(img)):
        raise InputError(f"Radiograph {str(p)!r} holds NaN/infinite values; re-export it with finite values.")
    meta.setdefault("source", str(p))
    return np.clip(img, 0.0, 1.0).astype(np.float32), spacing, meta


def _read_pil(p: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            dpi = im.info.get("dpi")
            if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                im = im.convert("L")
                mode = "L"
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"Image {str(p)!r} cannot be read ({type(err).__name__}: {str(err)[:80]}); it is "
                         "truncated or not a PNG/TIFF/JPEG: write it again.") from None
    if arr.ndim != 2:
        raise InputError(f"Image {str(p)!r} has shape {arr.shape}; a radiograph is one grey-level 2-D image.")
    if arr.dtype == np.bool_:
        img = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        img = arr.astype(np.float32) / 255.0
    elif arr.dtype in (np.uint16, np.int32, np.uint32) or mode.startswith("I"):
        img = arr.astype(np.float64) / 65535.0
    else:
        img = np.asarray(arr, dtype=np.float32)
    spacing = None
    meta: dict[str, Any] = {"format": p.suffix.lower().lstrip("."), "source": str(p)}
    if dpi and all(float(d) > 1.0 for d in dpi):
        # pHYs stores integer pixels per metre: snap back to the micrometre
        spacing = (round(25.4 / float(dpi[1]), 4), round(25.4 / float(dpi[0]), 4))
        meta["spacing_source"] = "png-phys"
    return img.astype(np.float32), spacing, meta


def _read_sitk_2d(p: Path):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as err:
        raise InputError(f"Image {str(p)!r} cannot be read ({str(err).strip().splitlines()[-1][:100]}); it is "
                         "truncated or corrupt: write it again.") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Image {str(p)!r} has several components per pixel; a radiograph has one.")
    arr = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in img.GetSpacing())
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"Image {str(p)!r} has shape {arr.shape}; a radiograph is one 2-D image, not a volume.")
    meta: dict[str, Any] = {"format": _stem_ext(p), "source": str(p), "spacing_source": "header"}
    for k in img.GetMetaDataKeys():
        if k.startswith("dxr_"):
            meta[k] = img.GetMetaData(k)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = (arr.astype(np.float64) - min(info.min, 0)) / float(info.max - min(info.min, 0))
    else:
        out = arr.astype(np.float64)
    return out.astype(np.float32), (spacing[1], spacing[0]), meta


def _stem_ext(p: Path) -> str:
    return p.name[len(_stem(p)):].lstrip(".").lower()


def _read_dicom_2d(p: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(p), force=p.name.lower().endswith((".dcm", ".dicom")))
            arr = ds.pixel_array
    except (InvalidDicomError, AttributeError) as err:
        raise InputError(f"{str(p)!r} is not a readable radiograph ({type(err).__name__}); give a DICOM, PNG or "
                         "NRRD file.") from None
    except Exception as err:
        raise InputError(f"DICOM radiograph {str(p)!r} is truncated or corrupt ({type(err).__name__}); write or "
                         "copy it again.") from None
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if spp > 1:
        arr = arr.mean(axis=-1)
    if n_frames > 1 or arr.ndim != 2:
        raise InputError(f"DICOM {str(p)!r} holds {n_frames} frame(s) of shape {arr.shape}; a radiograph is one "
                         "2-D frame (a CT series is read with read_ct).")
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    if int(getattr(ds, "PixelRepresentation", 0) or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2 ** bits - 1
    if np.issubdtype(arr.dtype, np.floating):
        img = arr.astype(np.float64)
    else:
        img = (arr.astype(np.float64) - lo) / float(hi - lo)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        img = 1.0 - img
    spacing = None
    src = None
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        v = ds.get(kw)
        if v is not None and len(v) == 2:
            try:
                s = (float(v[0]), float(v[1]))
            except (TypeError, ValueError):
                continue
            if s[0] > 0 and s[1] > 0:
                spacing, src = s, kw
                break
    info: dict[str, Any] = {}
    for kw in CARRY_TAGS + _KEEP_DX + ("Modality", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID",
                                       "FrameOfReferenceUID", "PhotometricInterpretation", "BitsStored"):
        if kw in ds:
            v = ds.data_element(kw).value
            if v is None:
                v = ""
            if kw == "PatientOrientation" or type(v).__name__ == "MultiValue":
                v = [str(x) for x in v] if not isinstance(v, str) else v.split("\\")
                if kw != "PatientOrientation":
                    v = "\\".join(v)
            elif kw in ("DistanceSourceToDetector", "DistanceSourceToPatient", "KVP", "SeriesNumber", "BitsStored"):
                try:
                    v = float(v) if v != "" else ""
                except (TypeError, ValueError):
                    v = ""
            else:
                v = str(v)
            info[kw] = v
    if "SOPClassUID" in info and "SOPInstanceUID" in info:
        info["SourceSOP"] = [info["SOPClassUID"], info["SOPInstanceUID"]]
    meta = {"format": "dcm", "source": str(p), "dicom": info, "spacing_source": src}
    return img.astype(np.float32), spacing, meta


def write_radiograph(image: np.ndarray, spacing: tuple[float, float] | float | None, path: str | os.PathLike,
                     template_meta: Mapping[str, Any] | None = None, description: str | None = None) -> Path:
    """Write a [0, 1] radiograph to ``path``; the format follows the extension (.dcm, .png, .nrrd/.mha/.nii...).

    ``spacing`` is (row, col) detector spacing in mm (a number means square pixels; None only for PNG/NRRD).
    For DICOM, ``template_meta`` (the ``meta`` of :func:`read_radiograph`, or a Volume/DRR meta with a ``dicom``
    entry) supplies patient/study tags (same StudyInstanceUID), view and geometry; the new file gets new SOP and
    Series Instance UIDs, references its source image and, with the source's SID/SAD, a PixelSpacing recomputed
    from the new spacing. ``description`` becomes the SeriesDescription (e.g. "DRR PA enhanced x2").
    """
    p = Path(path)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise OptionError(f"A radiograph must be a 2-D image, got shape {img.shape}.")
    if spacing is not None:
        spacing = (float(spacing), float(spacing)) if np.isscalar(spacing) else (float(spacing[0]), float(spacing[1]))
    name = p.name.lower()
    tm = dict(template_meta or {})
    if name.endswith((".dcm", ".dicom")):
        if spacing is None:
            raise OptionError("A DICOM radiograph needs its pixel spacing; give the spacing in mm.")
        info = dict(tm.get("dicom") or {})
        info.pop("SeriesInstanceUID", None)
        info.pop("SOPInstanceUID", None)
        info["ImageType"] = ["DERIVED", "SECONDARY"]
        if description:
            info["SeriesDescription"] = description
        src = tm.get("source")
        info.setdefault("DerivationDescription", f"Derived from {Path(str(src)).name}" if src else "Derived image")
        if description:
            info["DerivationDescription"] = f"{description}; derived from {Path(str(src)).name if src else 'source'}"
        return _save(build_dx_dataset(img, spacing, info), p)
    if name.endswith(".png"):
        return _write_png(img, spacing, p)
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".tif", ".tiff")):
        keys = {"dxr_kind": "radiograph"}
        if description:
            keys["dxr_description"] = description
        return _write_sitk_2d(img, spacing, p, keys)
    raise OptionError(f"Unknown radiograph format for {p.name!r}; use .dcm, .png or .nrrd.")
