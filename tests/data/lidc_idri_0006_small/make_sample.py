"""Make the small LIDC-IDRI-0006 sample of this folder from the original DICOM series (see ATTRIBUTION.md).

    python tests/data/lidc_idri_0006_small/make_sample.py /path/to/LIDC-IDRI-0006

Block means of 4 x 4 voxels in-plane and 2 slices (0.625 x 0.625 x 2.5 mm -> 2.5 x 2.5 x 5 mm, 128 x 128 x 66),
stored as int16 HU in a gzip-compressed NRRD. Blocks that are mostly outside the reconstruction circle keep the
padding value -2048 (so the field-of-view detection still sees it); in the others the padding voxels are left
out of the mean.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(src: str) -> None:
    import SimpleITK as sitk

    from dxr_core.io import read_ct

    v = read_ct(src)
    a = v.array
    pad = a <= -2000
    fz, fy, fx = 2, 4, 4
    nz, ny, nx = a.shape[0] // fz, a.shape[1] // fy, a.shape[2] // fx
    a = a[:nz * fz, :ny * fy, :nx * fx].reshape(nz, fz, ny, fy, nx, fx).astype(np.float64)
    p = pad[:nz * fz, :ny * fy, :nx * fx].reshape(nz, fz, ny, fy, nx, fx)
    n_in = (~p).sum(axis=(1, 3, 5))
    mean = np.where(p, 0.0, a).sum(axis=(1, 3, 5)) / np.maximum(n_in, 1)
    out = np.where(n_in * 2 < fz * fy * fx, -2048.0, mean)
    out = np.round(out).astype(np.int16)
    sp = (v.spacing[0] * fx, v.spacing[1] * fy, v.spacing[2] * fz)
    # the block centre: origin moves by half the block minus half a voxel
    shift = np.array([(fx - 1) / 2 * v.spacing[0], (fy - 1) / 2 * v.spacing[1], (fz - 1) / 2 * v.spacing[2]])
    origin = np.asarray(v.origin) + v.direction @ shift
    img = sitk.GetImageFromArray(out)
    img.SetSpacing(sp)
    img.SetOrigin(tuple(origin))
    img.SetDirection(tuple(v.direction.ravel()))
    dst = Path(__file__).with_name("lidc_idri_0006_small.nrrd")
    tmp = dst.with_suffix(".part.nrrd")
    sitk.WriteImage(img, str(tmp), True)
    tmp.replace(dst)
    print(dst, out.shape, sp, dst.stat().st_size)


if __name__ == "__main__":
    main(sys.argv[1])
