"""`Volume`: a CT (or attenuation) array with its patient geometry, exactly as SimpleITK defines it.

Array order is (z, y, x) = (slice, row, column), like ``sitk.GetArrayFromImage``. ``spacing``, ``origin`` and
``direction`` are in SimpleITK's (x, y, z) order; ``direction`` is the 3x3 matrix whose *columns* are the unit
vectors of the i, j, k index axes in LPS. World (LPS, mm) of index (i, j, k) = origin + direction @ (spacing * ijk).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dxr_core.errors import InputError


@dataclass
class Volume:
    array: np.ndarray  # (z, y, x), float32; HU for CT, 1/mm for attenuation volumes
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm, (x, y, z)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # LPS mm of voxel (0, 0, 0)'s centre
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))  # 3x3, columns = index axes in LPS
    meta: dict[str, Any] = field(default_factory=dict)  # DICOM patient/study tags, source path, ...

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise InputError(
                f"A CT volume must be 3-D but this image has {self.array.ndim} dimension(s) {self.array.shape}; "
                "give a CT series or a 3-D NIfTI/NRRD/MHA file, not a single slice or radiograph."
            )
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise InputError(f"Voxel spacing {self.spacing} mm is not positive; fix the header of the CT file.")
        if abs(abs(np.linalg.det(self.direction)) - 1.0) > 1e-3:
            raise InputError("The direction matrix of the CT is not orthonormal; fix the header of the CT file.")

    # --- geometry -------------------------------------------------------------------------------------------
    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def index_to_world_matrix(self) -> np.ndarray:
        """4x4 affine from continuous index (i, j, k) = (x, y, z) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) continuous (i, j, k) indices -> (..., 3) LPS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def world_to_index(self, lps: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) continuous (i, j, k) indices."""
        lps = np.asarray(lps, dtype=np.float64)
        inv = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return (lps - np.asarray(self.origin)) @ inv.T

    @property
    def center_lps(self) -> np.ndarray:
        """LPS mm of the geometric centre of the voxel grid."""
        return self.index_to_world((np.asarray(self.shape_xyz, dtype=np.float64) - 1.0) / 2.0)

    def corners_lps(self) -> np.ndarray:
        """(8, 3) LPS mm of the outer corners of the voxel grid (voxel edges, not centres)."""
        n = np.asarray(self.shape_xyz, dtype=np.float64)
        c = np.array([[a, b, d] for a in (0, 1) for b in (0, 1) for d in (0, 1)], dtype=np.float64)
        return self.index_to_world(c * n - 0.5)

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry and meta, new voxel values."""
        return replace(self, array=array, meta=dict(self.meta))

    # --- SimpleITK bridge -----------------------------------------------------------------------------------
    def to_sitk(self):
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, img, meta: dict[str, Any] | None = None) -> "Volume":
        import SimpleITK as sitk

        if img.GetDimension() != 3:
            raise InputError(
                f"A CT volume must be 3-D but this image has {img.GetDimension()} dimensions; "
                "give a CT series or a 3-D NIfTI/NRRD/MHA file."
            )
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("The image has several components per voxel (colour or vector); a CT has one.")
        arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
        return cls(
            array=arr,
            spacing=img.GetSpacing(),
            origin=img.GetOrigin(),
            direction=np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3),
            meta=dict(meta or {}),
        )
