"""Real radiograph folders: a dataset normalised to the house convention, and a patient-level split manifest.

    >>> from dxr_core.data.radiographs import RadiographFolder, patient_split
    >>> patient_split("cxr/metadata.csv", "cxr/split.csv", image_dir="cxr", seed=0)   # file, patient_id, split
    >>> train = RadiographFolder("cxr", manifest="cxr/split.csv", split="train", size=512)
    >>> item = train[0]          # {"image": (1, 512, 512) float32 tensor in [0, 1], "path", "patient_id", ...}

Reading goes through :func:`dxr_core.io.radiograph.read_radiograph`, so every format it reads is accepted
(PNG/JPEG/TIFF 8- or 16-bit, DICOM with any BitsStored, NRRD/MHA/NIfTI 2-D): integers are divided by their full
range, DICOM MONOCHROME1 is inverted (bone bright), RGB-encoded grayscale (PNG/JPEG figures, DICOM with
SamplesPerPixel 3) is converted to one grey channel. The result is float32 (H, W) in [0, 1], bone bright, air dark.

Optional ``rescale``: ``"minmax"`` stretches each image to [0, 1]; ``"percentile"`` maps its 0.5 / 99.5 percentiles
to 0 / 1 (and clips): useful for 12-bit data stored in 16-bit PNG, which otherwise reads dark.

The split is by patient (Architecture: "split by patient before anything is trained"): all images of a patient go
to one of train / val / test. Patients are shuffled with ``numpy.random.default_rng(seed)`` after sorting their ids,
one patient is first given to each split with a non-zero fraction (smallest fraction first), then each remaining
patient goes to the split furthest below its target image count. Same metadata + seed + fractions = same manifest.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from dxr_core.errors import InputError, OptionError
from dxr_core.io.radiograph import RADIOGRAPH_SUFFIXES, read_radiograph

__all__ = ["RadiographFolder", "list_radiographs", "load_radiograph", "patient_split", "read_manifest",
           "resize_radiograph", "SPLITS"]

SPLITS = ("train", "val", "test")
RESCALE = (None, "minmax", "percentile")


def list_radiographs(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted radiograph files under ``root`` (hidden files, JSON sidecars and partial writes are skipped)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"Radiograph folder {str(root)!r} does not exist; check the path.")
    it = root.rglob("*") if recursive else root.iterdir()
    files = [p for p in it if p.is_file() and p.name.lower().endswith(RADIOGRAPH_SUFFIXES)
             and not p.name.startswith(".") and ".part" not in p.name
             and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _rescale(img: np.ndarray, mode: str | None) -> np.ndarray:
    if mode is None:
        return img
    if mode == "minmax":
        lo, hi = float(img.min()), float(img.max())
    elif mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(img, (0.5, 99.5)))
    else:
        raise OptionError(f"Unknown rescale {mode!r}; use None, 'minmax' or 'percentile'.")
    if hi - lo < 1e-6:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resize_radiograph(image: np.ndarray, size: int | tuple[int, int], mode: str = "pad") -> np.ndarray:
    """Resize to ``size`` with antialiasing (``skimage.transform.resize``, cubic, anti_aliasing when shrinking).

    ``size`` int: ``mode="pad"`` scales the longer side to ``size`` and pads the shorter one symmetrically with 0
    (air) to ``size x size``; ``mode="stretch"`` resizes to ``size x size`` ignoring the aspect ratio.
    ``size`` (rows, cols): resize to exactly that.
    """
    from skimage.transform import resize

    img = np.asarray(image, np.float32)
    if isinstance(size, (tuple, list)):
        shape = (int(size[0]), int(size[1]))
        pad = False
    else:
        s = int(size)
        if s < 1:
            raise OptionError(f"Image size {size} must be a positive number of pixels, e.g. 512.")
        if mode == "stretch":
            shape, pad = (s, s), False
        elif mode == "pad":
            f = s / max(img.shape)
            shape, pad = (max(1, round(img.shape[0] * f)), max(1, round(img.shape[1] * f))), True
        else:
            raise OptionError(f"Unknown resize mode {mode!r}; use 'pad' or 'stretch'.")
    if shape != img.shape:
        shrink = shape[0] < img.shape[0] or shape[1] < img.shape[1]
        img = resize(img, shape, order=3, mode="reflect", anti_aliasing=shrink, preserve_range=True)
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
    if pad:
        s = int(size)
        out = np.zeros((s, s), np.float32)
        r0, c0 = (s - img.shape[0]) // 2, (s - img.shape[1]) // 2
        out[r0:r0 + img.shape[0], c0:c0 + img.shape[1]] = img
        img = out
    return img


def load_radiograph(path: str | os.PathLike, rescale: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One radiograph as float32 (H, W) in [0, 1], bone bright, plus ``meta`` (``spacing`` added)."""
    if rescale not in RESCALE:
        raise OptionError(f"Unknown rescale {rescale!r}; use None, 'minmax' or 'percentile'.")
    img, spacing, meta = read_radiograph(path)
    meta["spacing"] = spacing
    return _rescale(img, rescale), meta


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows (``file``, ``patient_id``, ``split``) of a manifest written by :func:`patient_split`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Split manifest {str(p)!r} does not exist; write it with patient_split(...).")
    with open(p, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "patient_id", "split"} <= set(rows[0]):
        raise InputError(f"{str(p)!r} is not a split manifest (columns file, patient_id, split); write it with "
                         "patient_split(...).")
    return rows


class RadiographFolder(torch.utils.data.Dataset):
    """Radiographs of a folder (or of one split of a manifest) as a map-style dataset.

    Item ``i``: ``{"image": (1, H, W) float32 tensor in [0, 1], "path": str, "name": str, "patient_id": str ("" when
    not from a manifest), "spacing": float32 tensor (row, col) in mm of the returned grid, NaN when unknown}`` (all
    collate with ``torch.utils.data.DataLoader``). With ``size`` every image is resized (:func:`resize_radiograph`,
    ``resize`` mode), so items batch with a DataLoader; without it images keep their own size (use batch size 1).
    ``transform`` (e.g. a MONAI ``Compose``) is applied to the image tensor last.
    """

    def __init__(self, root: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None,
                 manifest: str | os.PathLike | None = None, split: str | Iterable[str] | None = None,
                 size: int | tuple[int, int] | None = None, resize: str = "pad", rescale: str | None = None,
                 recursive: bool = True, transform: Callable | None = None):
        self.root = Path(root).expanduser()
        if rescale not in RESCALE:
            raise OptionError(f"Unknown rescale {rescale!r}; use None, 'minmax' or 'percentile'.")
        self.size, self.resize, self.rescale, self.transform = size, resize, rescale, transform
        self.patients: dict[str, str] = {}
        if manifest is not None:
            rows = read_manifest(manifest)
            wanted = {split} if isinstance(split, str) else (set(split) if split is not None else set(SPLITS))
            bad = wanted - set(SPLITS)
            if bad:
                raise OptionError(f"Unknown split(s) {sorted(bad)}; use {', '.join(SPLITS)}.")
            rows = [r for r in rows if r["split"] in wanted]
            self.files = [self.root / r["file"] for r in rows]
            self.patients = {str(self.root / r["file"]): r["patient_id"] for r in rows}
            missing = [f for f in self.files if not f.is_file()]
            if missing:
                raise InputError(f"{len(missing)} file(s) of manifest {str(manifest)!r} are not in {str(self.root)!r} "
                                 f"(first: {missing[0].name}); give the image folder the manifest was written for.")
        elif files is not None:
            self.files = [Path(f) if Path(f).is_absolute() else self.root / f for f in files]
        else:
            self.files = list_radiographs(self.root, recursive=recursive)
        if not self.files:
            raise InputError(f"No radiographs found in {str(self.root)!r}"
                             + (f" for split {split!r}" if manifest is not None else "")
                             + f"; give a folder with {', '.join(s for s in RADIOGRAPH_SUFFIXES[:6])} ... files.")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as float32 (H, W) in [0, 1] (resized when ``size`` is set)."""
        img, _ = load_radiograph(self.files[index], self.rescale)
        return resize_radiograph(img, self.size, self.resize) if self.size is not None else img

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        img, meta = load_radiograph(path, self.rescale)
        spacing = meta.get("spacing")
        if self.size is not None:
            h, w = img.shape
            img = resize_radiograph(img, self.size, self.resize)
            if spacing is not None:  # the content grid (padding adds pixels of the same size)
                if isinstance(self.size, (tuple, list)) or self.resize == "stretch":
                    nh, nw = img.shape
                else:
                    f = int(self.size) / max(h, w)
                    nh, nw = max(1, round(h * f)), max(1, round(w * f))
                spacing = (spacing[0] * h / nh, spacing[1] * w / nw)
        t = torch.from_numpy(np.ascontiguousarray(img))[None]
        if self.transform is not None:
            t = self.transform(t)
        sp = torch.tensor(spacing if spacing is not None else (float("nan"), float("nan")), dtype=torch.float32)
        return {"image": t, "path": str(path), "name": path.name,
                "patient_id": self.patients.get(str(path), ""), "spacing": sp}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not np.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise OptionError(f"Split fractions {fractions!r} must be three non-negative numbers (train, val, test), "
                          "e.g. 0.8,0.1,0.1.")
    s = sum(fr)
    return tuple(f / s for f in fr)  # type: ignore[return-value]


def patient_split(metadata: str | os.PathLike, out: str | os.PathLike, image_dir: str | os.PathLike | None = None,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, patient_column: str = "patientid",
                  file_column: str = "filename") -> list[dict[str, str]]:
    """Write a patient-level train/val/test manifest (CSV: ``file, patient_id, split``) and return its rows.

    ``metadata`` is a CSV table with one row per image (default columns as in covid-chestxray-dataset's
    ``metadata.csv``: ``patientid`` and ``filename``; both configurable). With ``image_dir`` only rows whose file
    exists there are kept (rows of images that are not present are dropped, e.g. a licence-filtered copy). Each
    patient's images all go to one split; ``fractions`` (train, val, test) are targets in *images*; patients are
    assigned as described in the module docstring, deterministically for ``seed``. The manifest is written
    atomically, sorted by file name.
    """
    from dxr_core.io.atomic import write_text_atomic

    fr = _check_fractions(fractions)
    mp = Path(metadata).expanduser()
    if not mp.is_file():
        raise InputError(f"Metadata table {str(mp)!r} does not exist; give the CSV with one row per image.")
    try:
        with open(mp, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"Metadata table {str(mp)!r} is not a readable CSV ({err}); save it as UTF-8 CSV.") from None
    cols = set(rows[0]) if rows else set()
    for col, opt in ((patient_column, "patient_column"), (file_column, "file_column")):
        if col not in cols:
            names = ", ".join(sorted(cols))[:200]
            raise InputError(f"Metadata table {str(mp)!r} has no column {col!r} (columns: {names}); name the right "
                             f"one with {opt}=...")
    idir = Path(image_dir).expanduser() if image_dir is not None else None
    if idir is not None and not idir.is_dir():
        raise InputError(f"Image folder {str(idir)!r} does not exist; check the path.")
    by_file: dict[str, str] = {}
    for i, r in enumerate(rows):
        fname = (r.get(file_column) or "").strip()
        pid = (r.get(patient_column) or "").strip()
        if not fname:
            continue
        if not pid:
            raise InputError(f"Row {i + 2} of {str(mp)!r} ({fname}) has no {patient_column!r}; every image needs a "
                             "patient id for a patient-level split (fill it in or drop the row).")
        if idir is not None and not (idir / fname).is_file():
            continue
        old = by_file.get(fname)
        if old is not None and old != pid:
            raise InputError(f"{fname} is listed for two patients ({old!r} and {pid!r}) in {str(mp)!r}; fix the table.")
        by_file[fname] = pid
    if not by_file:
        raise InputError(f"No image of {str(mp)!r} was found" + (f" in {str(idir)!r}" if idir else "")
                         + f"; check image_dir and the {file_column!r} column.")
    counts: dict[str, int] = {}
    for pid in by_file.values():
        counts[pid] = counts.get(pid, 0) + 1
    patients = sorted(counts)
    active = [k for k in range(3) if fr[k] > 0]
    if len(patients) < len(active):
        raise InputError(f"{len(patients)} patient(s) cannot fill {len(active)} splits without sharing a patient; "
                         "add patients or set the fraction of a split to 0.")
    order = [patients[i] for i in np.random.default_rng(int(seed)).permutation(len(patients))]
    total = len(by_file)
    target = [fr[k] * total for k in range(3)]
    have = [0, 0, 0]
    assign: dict[str, int] = {}
    first = sorted(active, key=lambda k: (fr[k], k))
    for k, pid in zip(first, order):
        assign[pid] = k
        have[k] += counts[pid]
    for pid in order[len(first):]:
        k = max(active, key=lambda j: (target[j] - have[j], -j))
        assign[pid] = k
        have[k] += counts[pid]
    out_rows = [{"file": f, "patient_id": by_file[f], "split": SPLITS[assign[by_file[f]]]} for f in sorted(by_file)]
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "patient_id", "split"], lineterminator="\n")
    w.writeheader()
    w.writerows(out_rows)
    write_text_atomic(Path(out).expanduser(), buf.getvalue())
    return out_rows
