"""Analytic shape primitives evaluated on points (LPS mm).

Every primitive is split into *parts*; each part has an axis-aligned bounding box and a signed-distance-like
function ``sdf(points (N, 3) float) -> (N,) float`` that is negative inside, positive outside and never larger in
magnitude than the true Euclidean distance to the surface (it is a 1-Lipschitz lower bound, up to a small
factor for tapered tubes). The voxeliser relies on that bound: a voxel whose centre is more than half a voxel
diagonal from every surface is uniform and needs no supersampling.

Primitives
- :class:`Ellipsoid` / :class:`SuperEllipsoid`: centre, radii, rotation; the superellipsoid has two squareness
  exponents (``e_xy`` in the x-y plane, ``e_z`` between that and z), both ``<= 1`` (boxy), 1 = ellipsoid.
- :class:`Tube`: a chain of tapered capsules along a polyline with a radius per vertex; :meth:`Tube.from_spline`
  builds the polyline from control points with a Catmull-Rom spline.
- :class:`Union`: several primitives painted with one value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

Sdf = Callable[[np.ndarray], np.ndarray]


@dataclass
class Part:
    lo: np.ndarray  # (3,) LPS mm, bounding box min (x, y, z)
    hi: np.ndarray  # (3,) LPS mm, bounding box max
    sdf: Sdf


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """3x3 rotation whose columns are the primitive's local axes in LPS: Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


class Primitive:
    def parts(self) -> list[Part]:  # pragma: no cover - interface
        raise NotImplementedError

    def sdf(self, pts: np.ndarray) -> np.ndarray:
        """Union SDF over all parts (min); for tests and for placing structures."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        out = np.full(len(pts), np.inf)
        for p in self.parts():
            out = np.minimum(out, p.sdf(pts))
        return out

    def contains(self, pts: np.ndarray) -> np.ndarray:
        return self.sdf(pts) <= 0


class SuperEllipsoid(Primitive):
    """Superellipsoid |x/a|^(2/e_xy) + |y/b|^(2/e_xy) raised to e_xy/e_z, plus |z/c|^(2/e_z) <= 1.

    ``e_xy = e_z = 1`` is an ellipsoid; smaller exponents give boxier shapes (e.g. ``e_z = 0.3`` a cylinder with
    rounded ends: vertebral bodies, trunk). The returned distance ``(radial_norm - 1) * min(radii)`` is a lower
    bound of the true distance because the p-norms with p >= 2 are 1-Lipschitz.
    """

    def __init__(self, center, radii, rot: np.ndarray | None = None, e_xy: float = 1.0, e_z: float = 1.0):
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.rot = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
        if not (0 < e_xy <= 1 and 0 < e_z <= 1):
            raise ValueError("superellipsoid exponents must be in (0, 1]")
        self.e_xy, self.e_z = float(e_xy), float(e_z)

    def _sdf(self, pts: np.ndarray) -> np.ndarray:
        dt = pts.dtype if pts.dtype in (np.float32, np.float64) else np.float64
        q = pts - self.center.astype(dt)
        if not np.array_equal(self.rot, np.eye(3)):
            q = q @ self.rot.astype(dt)
        q = np.abs(q / self.radii.astype(dt))
        if self.e_xy == 1.0 and self.e_z == 1.0:
            n = np.sqrt((q * q).sum(axis=-1))
        else:
            p1, p2 = 2.0 / self.e_xy, 2.0 / self.e_z
            # points come from the bounding box grown by a few mm, so q stays small: no overflow scaling needed
            q = np.minimum(q, 4.0)
            rxy = (q[:, 0] ** p1 + q[:, 1] ** p1) ** (1.0 / p1)
            n = (rxy**p2 + q[:, 2] ** p2) ** (1.0 / p2)
        return (n - 1.0) * self.radii.min()

    def parts(self) -> list[Part]:
        ext = np.abs(self.rot) @ self.radii  # axis-aligned half extents of the rotated box
        return [Part(self.center - ext, self.center + ext, self._sdf)]


class Ellipsoid(SuperEllipsoid):
    def __init__(self, center, radii, rot: np.ndarray | None = None):
        super().__init__(center, radii, rot, 1.0, 1.0)


def _seg_sdf(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> Sdf:
    ab = b - a
    ll = float(ab @ ab)
    a32, ab32 = a.astype(np.float32), ab.astype(np.float32)

    def f(pts: np.ndarray) -> np.ndarray:
        if pts.dtype == np.float32:
            ap = pts - a32
            t = np.clip((ap @ ab32) / np.float32(ll), 0.0, 1.0) if ll > 0 else np.zeros(len(pts), np.float32)
            d = ap - t[:, None] * ab32
            return np.sqrt((d * d).sum(axis=-1)) - np.float32(ra) - np.float32(rb - ra) * t
        ap = pts - a
        t = np.clip((ap @ ab) / ll, 0.0, 1.0) if ll > 0 else np.zeros(len(pts))
        d = ap - t[:, None] * ab
        return np.sqrt((d * d).sum(axis=-1)) - (ra + (rb - ra) * t)

    return f


class Tube(Primitive):
    """A tube along a polyline: union of tapered capsules, radius linear along each segment."""

    def __init__(self, points, radii):
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        r = np.asarray(radii, dtype=np.float64)
        self.radii = np.broadcast_to(r, (len(self.points),)).astype(np.float64) if r.ndim == 0 else r
        if len(self.points) < 2 or len(self.radii) != len(self.points):
            raise ValueError("a tube needs >= 2 points and one radius per point")

    @classmethod
    def from_spline(cls, control_points, radii, n: int = 24) -> "Tube":
        """Catmull-Rom spline through ``control_points`` sampled at ``n`` points; radii interpolated linearly."""
        cp = np.asarray(control_points, dtype=np.float64)
        r = np.asarray(radii, dtype=np.float64)
        r = np.broadcast_to(r, (len(cp),)) if r.ndim == 0 else r
        pts = catmull_rom(cp, n)
        u = np.linspace(0, len(cp) - 1, n)
        return cls(pts, np.interp(u, np.arange(len(cp)), r))

    def shrunk(self, by_mm: float) -> "Tube":
        return Tube(self.points, np.maximum(self.radii - by_mm, 0.05))

    def parts(self) -> list[Part]:
        out = []
        for i in range(len(self.points) - 1):
            a, b = self.points[i], self.points[i + 1]
            ra, rb = self.radii[i], self.radii[i + 1]
            r = max(ra, rb)
            out.append(Part(np.minimum(a, b) - r, np.maximum(a, b) + r, _seg_sdf(a, b, ra, rb)))
        return out


class Union(Primitive):
    def __init__(self, items: Iterable[Primitive]):
        self.items = list(items)

    def parts(self) -> list[Part]:
        return [p for it in self.items for p in it.parts()]


def catmull_rom(cp: np.ndarray, n: int) -> np.ndarray:
    """Centripetal-free (uniform) Catmull-Rom curve through all control points, ``n`` samples."""
    cp = np.asarray(cp, dtype=np.float64)
    if len(cp) == 2:
        return np.linspace(cp[0], cp[1], n)
    ext = np.vstack([2 * cp[0] - cp[1], cp, 2 * cp[-1] - cp[-2]])
    u = np.linspace(0, len(cp) - 1, n)
    i = np.minimum(u.astype(int), len(cp) - 2)
    t = (u - i)[:, None]
    p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    return 0.5 * (
        2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )


@dataclass
class Layer:
    """A primitive painted with one HU value; layers are painted in order (later ones cover earlier ones)."""

    name: str
    shape: Primitive
    hu: float


def layers_bbox(layers: Sequence[Layer]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for layer in layers:
        for p in layer.shape.parts():
            lo = np.minimum(lo, p.lo)
            hi = np.maximum(hi, p.hi)
    return lo, hi
