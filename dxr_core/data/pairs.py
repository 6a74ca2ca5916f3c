"""Paired LQ/HQ image folders and deterministic random-patch batches (MONAI dictionary transforms).

Layout: ``DIR/lq/<name>.<ext>`` and ``DIR/hq/<name>.<ext>`` with the same stems (PNG, DICOM, NRRD... anything
``dxr_core.io.read_radiograph`` reads). The HQ grid defines the target; the LQ image is bicubic-resized onto it once
at load time (the same :func:`dxr_core.diffusion.upsample_condition` used at inference), so random crops, flips and
rotations are applied identically to both by MONAI's ``RandSpatialCropd`` / ``RandFlipd`` / ``RandRotate90d``.

Every patch is a pure function of (seed, index): batch ``it`` of rank ``r`` uses indices
``((it - 1) * world + r) * B + j``, so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dxr_core.errors import InputError

IMAGE_SUFFIXES = (".png", ".dcm", ".dicom", ".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".tif", ".tiff")


def _stem(p: Path) -> str:
    n = p.name
    for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if n.lower().endswith(s):
            return n[: -len(s)]
    return p.stem


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a radiograph as float32 (H, W) in [0, 1] (via dxr_core.io when available, else 16-bit PNG by PIL)."""
    try:
        from dxr_core.io import read_radiograph
    except ImportError:  # pragma: no cover - io package not installed
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im)
        return (a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 or a.max() > 255 else 255.0))
    return read_radiograph(path)[0]


def write_image(image: np.ndarray, path: str | os.PathLike, spacing=None) -> Path:
    """Write a [0, 1] image (format from the extension) atomically."""
    try:
        from dxr_core.io import write_radiograph
    except ImportError:  # pragma: no cover
        from PIL import Image

        from dxr_core.io.atomic import atomic_path

        with atomic_path(path) as tmp:
            Image.fromarray(np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)).save(tmp)
        return Path(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_radiograph(np.clip(image, 0, 1).astype(np.float32), spacing, path)


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                  and not p.name.startswith("."))


def pair_window(lq: np.ndarray, hq: np.ndarray, crop: int, centre: tuple[float, float] = (0.45, 0.30),
                scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Aligned windows of an LQ/HQ pair: the ``crop x crop`` HQ window and its ``crop/scale`` LQ window (LQ pixel
    (r, c) covers HQ pixels (scale*r .. scale*r+scale-1, ...)), centred at fractions ``centre`` (row, col) of the
    image; the default centre lies in the right lung field of a PA chest view."""
    h = min(crop // scale, lq.shape[0], lq.shape[1])  # a window larger than the image is the whole image
    r0 = min(max(int(lq.shape[0] * centre[0]) - h // 2, 0), lq.shape[0] - h)
    c0 = min(max(int(lq.shape[1] * centre[1]) - h // 2, 0), lq.shape[1] - h)
    return lq[r0:r0 + h, c0:c0 + h], hq[scale * r0:scale * (r0 + h), scale * c0:scale * (c0 + h)]


def find_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Matching (lq, hq) files under ``root/lq`` and ``root/hq``."""
    root = Path(root)
    if not (root / "lq").is_dir() or not (root / "hq").is_dir():
        raise InputError(f"{root} has no lq/ and hq/ sub-folders; put paired images with the same names in "
                         f"{root}/lq and {root}/hq (e.g. with dxr_core.data.write_pairs).")
    hq = {_stem(p): p for p in list_images(root / "hq")}
    pairs = [(p, hq[_stem(p)]) for p in list_images(root / "lq") if _stem(p) in hq]
    if not pairs:
        raise InputError(f"no matching names in {root}/lq and {root}/hq; each LQ image needs an HQ image with the "
                         "same name.")
    return pairs


@dataclass
class Pair:
    name: str
    lq: torch.Tensor  # (1, h, w) in [-1, 1]
    cond: torch.Tensor  # (1, H, W) in [-1, 1]: LQ bicubic on the HQ grid
    hq: torch.Tensor  # (1, H, W) in [-1, 1]


def load_pairs(root: str | os.PathLike, files: list[tuple[Path, Path]] | None = None) -> list[Pair]:
    from dxr_core.diffusion.enhancer import upsample_condition

    out = []
    for lq_p, hq_p in files if files is not None else find_pairs(root):
        lq = torch.from_numpy(read_image(lq_p))[None] * 2 - 1
        hq = torch.from_numpy(read_image(hq_p))[None] * 2 - 1
        cond = upsample_condition(lq[None], tuple(hq.shape[-2:]))[0]
        out.append(Pair(_stem(lq_p), lq, cond, hq))
    return out


def split_pairs(files: list, val_fraction: float = 0.1, min_val: int = 1) -> tuple[list, list]:
    """Deterministic held-out split: every k-th file goes to validation."""
    n = len(files)
    n_val = min(n - 1, max(min_val, int(round(n * val_fraction)))) if n > 1 else 0
    if n_val <= 0:
        return list(files), []
    step = n / n_val
    val_idx = {int(i * step + step / 2) for i in range(n_val)}
    return [f for i, f in enumerate(files) if i not in val_idx], [f for i, f in enumerate(files) if i in val_idx]


def _plain(x) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)  # MetaTensor -> Tensor
    return x.float().contiguous()


class PatchDataset(torch.utils.data.Dataset):
    """Index -> random (cond, hq) patch, deterministic in (seed, index). Map-style; usable with DataLoader workers."""

    def __init__(self, pairs: list[Pair], crop: int = 128, seed: int = 0, length: int = 2 ** 31 - 1):
        from monai.transforms import Compose, RandFlipd, RandRotate90d, RandSpatialCropd, SpatialPadd

        if not pairs:
            raise InputError("no training pairs; give a --pairs folder with images in lq/ and hq/.")
        self.pairs = pairs
        self.crop = int(crop)
        self.seed = int(seed)
        self.length = int(length)
        keys = ["cond", "hq"]
        self.transform = Compose([
            SpatialPadd(keys, spatial_size=(self.crop, self.crop), mode="reflect"),
            RandSpatialCropd(keys, roi_size=(self.crop, self.crop), random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.5, max_k=3),
        ])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        ss = np.random.SeedSequence([self.seed, int(index)])
        rng = np.random.default_rng(ss)
        p = self.pairs[int(rng.integers(len(self.pairs)))]
        self.transform.set_random_state(seed=int(rng.integers(2 ** 31 - 1)))
        from monai.data import get_track_meta, set_track_meta

        track = get_track_meta()
        set_track_meta(False)  # plain tensors: 2.5x less transform overhead, same values
        try:
            d = self.transform({"cond": p.cond, "hq": p.hq})
        finally:
            set_track_meta(track)
        return {k: _plain(d[k]) for k in ("cond", "hq")}

    def batch(self, iteration: int, batch_size: int, rank: int = 0, world: int = 1) -> dict:
        """The batch of 1-based ``iteration`` for ``rank`` (pure function of the arguments)."""
        base = ((int(iteration) - 1) * world + rank) * batch_size
        items = [self[base + j] for j in range(batch_size)]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class IterationSampler(torch.utils.data.Sampler):
    """Sample indices for iterations ``start+1 .. stop`` of one rank, in the order :meth:`PatchDataset.batch` uses."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.b, self.rank, self.world = int(start), int(stop), int(batch_size), rank, world

    def __iter__(self):
        for it in range(self.start + 1, self.stop + 1):
            base = ((it - 1) * self.world + self.rank) * self.b
            yield from range(base, base + self.b)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.b
