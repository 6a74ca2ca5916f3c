"""Lung nodule models (analytic, star-shaped) and their partial-volume insertion into a CT.

Kinds and default attenuation (Fleischner Society glossary, Hansell et al., Radiology 246:697, 2008; calcified
nodules > 200 HU, Siegelman et al., Radiology 160:307, 1986; ground glass about -750..-300 HU, we keep pure GGO
<= -600 HU):
- ``solid``: +40 HU (allowed -10..+100);
- ``part_solid``: a solid core (+30 HU, ``core_fraction`` of the diameter) in ground glass (-650 HU);
- ``ggo`` (pure ground glass): -650 HU (allowed <= -600); vessels stay visible through it (max blend);
- ``calcified``: +450 HU (allowed > 200).

Shapes: ``sphere``, ``ellipsoid`` (axis ratios up to 1.4 : 1 : 0.7, random orientation, same volume as the
sphere), ``lobulated`` (a few rounded lobes), ``spiculated`` (thin tapering spicules of 0.4-1.1 radii). The
nominal ``diameter_mm`` is that of the core sphere (equal-volume sphere for ellipsoids).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from dxr_core.errors import InputError, OptionError
from dxr_core.volume import Volume

KINDS = ("solid", "part_solid", "ggo", "calcified")
SHAPES = ("sphere", "ellipsoid", "lobulated", "spiculated")
DEFAULT_HU = {"solid": 40.0, "part_solid": -650.0, "ggo": -650.0, "calcified": 450.0}
CORE_HU = 30.0
HU_RANGE = {"solid": (-10.0, 100.0), "part_solid": (-1000.0, -300.0), "ggo": (-1000.0, -600.0),
            "calcified": (200.01, 3000.0)}
DIAMETER_RANGE = (3.0, 30.0)


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class Nodule:
    kind: str = "solid"
    diameter_mm: float = 10.0
    center_lps: Sequence[float] = (0.0, 0.0, 0.0)
    shape: str = "sphere"
    hu: float | None = None
    core_fraction: float = 0.5
    seed: int = 0
    _geo: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise OptionError(f"Unknown nodule kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        if self.shape not in SHAPES:
            raise OptionError(f"Unknown nodule shape {self.shape!r}; use one of {', '.join(SHAPES)}.")
        d = float(self.diameter_mm)
        if not (DIAMETER_RANGE[0] <= d <= DIAMETER_RANGE[1]):
            raise OptionError(f"Nodule diameter {d:g} mm is outside {DIAMETER_RANGE[0]:g}-{DIAMETER_RANGE[1]:g} mm; "
                              "give a diameter in that range.")
        self.diameter_mm = d
        if self.hu is None:
            self.hu = DEFAULT_HU[self.kind]
        lo, hi = HU_RANGE[self.kind]
        if not (lo <= float(self.hu) <= hi):
            raise OptionError(f"{self.hu:g} HU is not a {self.kind} nodule value ({lo:g}..{hi:g} HU); "
                              "change --nodule-kind or the HU.")
        if not 0.1 <= float(self.core_fraction) <= 0.9:
            raise OptionError("core_fraction of a part-solid nodule must be within 0.1-0.9.")
        self.center_lps = tuple(float(c) for c in np.asarray(self.center_lps, dtype=np.float64).ravel()[:3])
        self._geo = self._make_geometry()

    # ---- analytic shape --------------------------------------------------------------------------------------
    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0

    def _make_geometry(self) -> dict:
        rng = np.random.default_rng(self.seed)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        axes = np.ones(3)
        lobes = spikes = None
        if self.shape == "ellipsoid":
            axes = np.array([rng.uniform(1.1, 1.4), 1.0, rng.uniform(0.7, 0.9)])
            axes /= np.cbrt(axes.prod())
        elif self.shape == "lobulated":
            n = int(rng.integers(4, 8))
            lobes = (_unit(rng.normal(size=(n, 3))), rng.uniform(0.15, 0.3, n))
        elif self.shape == "spiculated":
            n = int(rng.integers(8, 15))
            spikes = (_unit(rng.normal(size=(n, 3))), rng.uniform(0.4, 1.1, n), rng.uniform(0.05, 0.09, n))
        g_max = float(axes.max())
        if lobes is not None:
            g_max = 1.0 + float(lobes[1].sum())
        if spikes is not None:
            g_max = 1.0 + float(spikes[1].max()) * 1.05
        return {"rot": q, "axes": axes, "lobes": lobes, "spikes": spikes, "extent": self.radius_mm * g_max}

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere around the centre that contains the whole nodule (spicules included)."""
        return float(self._geo["extent"])

    @property
    def body_extent_mm(self) -> float:
        """Radius containing the nodule body without spicules (used for the pleura check)."""
        g = self._geo
        if g["spikes"] is not None:
            return self.radius_mm * 1.02
        return self.extent_mm

    def _radial(self, pts: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """|q| / (R g(u)) : <= 1 inside. ``scale`` shrinks the nodule (part-solid core)."""
        g = self._geo
        q = (np.asarray(pts, dtype=np.float64) - np.asarray(self.center_lps)) @ g["rot"]
        q = q / g["axes"]
        r = np.sqrt((q * q).sum(-1))
        u = q / np.maximum(r, 1e-9)[..., None]
        gu = np.ones(r.shape)
        if g["lobes"] is not None:
            dirs, amp = g["lobes"]
            gu = 0.9 + (np.maximum(u @ dirs.T, 0.0) ** 4 * amp).sum(-1) * 1.6
            gu = np.maximum(gu, 0.9)
        if g["spikes"] is not None:
            dirs, length, width = g["spikes"]
            # max_j L_j exp(-a_j^2 / w_j^2) = exp(-min_j (a_j^2 / w_j^2 - ln L_j)): one exp per point
            ang2 = 2.0 - 2.0 * np.clip(u @ dirs.T, -1.0, 1.0)  # ~ angle^2
            gu = gu + np.exp(-(ang2 * (1.0 / width**2) - np.log(length)).min(-1))
        return r / (self.radius_mm * scale * gu)

    def contains(self, pts: np.ndarray) -> np.ndarray:
        return self._radial(pts) <= 1.0

    def classify(self, centres: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
        """(inner, edge) booleans for balls of radius ``h`` around ``centres``: inner = wholly inside (and wholly
        in the core or wholly out of it for part-solid), edge = may straddle a surface (needs supersampling)."""
        g = self._geo
        R = self.radius_mm
        if self.shape == "spiculated":
            q = (np.asarray(centres, dtype=np.float64) - np.asarray(self.center_lps)) @ g["rot"]
            r = np.sqrt((q * q).sum(-1))
            u = q / np.maximum(r, 1e-9)[:, None]
            dirs, length, width = g["spikes"]
            ang = np.arccos(np.clip(u @ dirs.T, -1.0, 1.0))
            delta = np.arcsin(np.clip(h / np.maximum(r, 1e-9), 0.0, 1.0))[:, None]
            a_eff = np.maximum(ang - delta, 0.0)
            g_wide = 1.0 + np.exp(-((2.0 - 2.0 * np.cos(a_eff)) * (1.0 / width**2) - np.log(length)).min(-1))
            out = r - h > R * g_wide
            inner = r + h < R
            if self.kind == "part_solid":
                cf = float(self.core_fraction)
                inner &= np.abs(r - R * cf) > h * 1.5
            return inner, ~(out | inner)
        rho = self._radial(centres)
        s_min = float(g["axes"].min()) if self.shape != "lobulated" else 0.45
        far = np.abs(rho - 1.0) * R * s_min > h
        if self.kind == "part_solid":
            cf = float(self.core_fraction)
            far &= np.abs(rho / cf - 1.0) * R * cf * s_min > h
        return far & (rho <= 1.0), ~far

    def hu_at(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inside bool, HU) at points."""
        rad = self._radial(pts)
        inside = rad <= 1.0
        hu = np.full(inside.shape, float(self.hu), dtype=np.float64)
        if self.kind == "part_solid":
            core = self._radial(pts, scale=self.core_fraction) <= 1.0
            hu[core] = CORE_HU
        return inside, hu

    @property
    def category(self) -> str:
        return self.kind

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_geo", None)
        d["center_lps"] = list(self.center_lps)
        d["extent_mm"] = self.extent_mm
        return d


# ---- insertion -------------------------------------------------------------------------------------------------
def _index_box(volume: Volume, center, radius: float, pad: int = 1):
    c = np.asarray(center, dtype=np.float64)
    corners = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64) * radius + c
    ijk = volume.world_to_index(corners)
    lo = np.floor(ijk.min(0)).astype(int) - pad
    hi = np.ceil(ijk.max(0)).astype(int) + pad
    n = np.asarray(volume.shape_xyz)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, n - 1)
    if np.any(lo > hi):
        return None
    return lo, hi  # inclusive, (i, j, k)


def nodule_patch(volume: Volume, nodule: Nodule, base: np.ndarray | None = None):
    """New HU on the nodule's sub-box of ``volume``: returns (slices (z,y,x), new_patch, occupancy fraction).

    Each voxel is supersampled (sub-spacing <= 0.5 mm, 2..4 per axis) for partial-volume edges; solid,
    part-solid and calcified nodules replace the tissue by their fraction, ground glass keeps denser tissue
    (vessels) with a max blend.
    """
    box = _index_box(volume, nodule.center_lps, nodule.extent_mm)
    if box is None:
        raise InputError(f"Nodule centre {nodule.center_lps} mm (LPS) lies outside the CT; give a point inside it.")
    lo, hi = box
    sl = (slice(lo[2], hi[2] + 1), slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))
    old = np.asarray(volume.array[sl] if base is None else base, dtype=np.float32)
    k = [int(np.clip(math.ceil(s / 0.5), 2, 4)) for s in volume.spacing]
    offs = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in k], indexing="ij"), -1).reshape(-1, 3)
    kk, jj, ii = np.meshgrid(np.arange(lo[2], hi[2] + 1), np.arange(lo[1], hi[1] + 1), np.arange(lo[0], hi[0] + 1),
                             indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], -1).astype(np.float64)
    n_vox, K = len(ijk), len(offs)
    frac = np.zeros(n_vox)
    hu_sum = np.zeros(n_vox)
    # voxels whose centre is clearly inside or outside (surface farther than the voxel half diagonal) need no
    # supersampling (spicules: the cone of directions a voxel subtends is tested against each spicule)
    centres = volume.index_to_world(ijk)
    h = 0.5 * float(np.linalg.norm(volume.spacing)) * 1.2
    inner, edge = nodule.classify(centres, h)
    if inner.any():
        _, hu_c = nodule.hu_at(centres[inner])
        frac[inner] = 1.0
        hu_sum[inner] = hu_c * K
    idx = np.nonzero(edge)[0]
    step = max(1, 400_000 // K)
    for s0 in range(0, len(idx), step):
        e = idx[s0 : s0 + step]
        pts = volume.index_to_world((ijk[e, None, :] + offs[None]).reshape(-1, 3))
        inside, hu = nodule.hu_at(pts)
        inside = inside.reshape(-1, K)
        frac[e] = inside.mean(1)
        hu_sum[e] = (hu.reshape(-1, K) * inside).sum(1)
    frac = frac.reshape(old.shape)
    mean_hu = np.where(frac > 0, hu_sum.reshape(old.shape) / np.maximum(frac * K, 1e-9), 0.0)
    new = old * (1.0 - frac) + mean_hu * frac
    if nodule.kind == "ggo":
        new = np.maximum(old, new)
    return sl, new.astype(np.float32), frac.astype(np.float32)


def insert_nodules(volume: Volume, nodules: Sequence[Nodule]) -> Volume:
    """A new Volume with the nodules inserted (the input is not modified)."""
    arr = np.array(volume.array, dtype=np.float32, copy=True)
    out = volume.with_array(arr)
    for nod in nodules:
        sl, new, _ = nodule_patch(out, nod)
        out.array[sl] = new
    out.meta["nodules"] = [n.to_dict() for n in nodules]
    return out


# ---- placement -------------------------------------------------------------------------------------------------
class LungDistance:
    """Distance (mm) from each lung voxel to the outside of the lung mask, on a grid of about 2 mm."""

    def __init__(self, volume: Volume, mask: np.ndarray | None = None):
        from dxr_core.nodules.mask import lung_mask

        self.volume = volume
        m = lung_mask(volume) if mask is None else mask
        sp = np.asarray(volume.spacing)  # x, y, z
        self.step = np.maximum(1, np.floor(2.0 / sp)).astype(int)  # x, y, z
        sx, sy, sz = self.step
        # a coarse cell is lung only if all its voxels are (conservative)
        nz, ny, nx = (np.asarray(m.shape) // np.array([sz, sy, sx])) * np.array([sz, sy, sx])
        mc = m[:nz, :ny, :nx].reshape(nz // sz, sz, ny // sy, sy, nx // sx, sx).all(axis=(1, 3, 5))
        self.cell_mm = sp * self.step
        self.dist = ndimage.distance_transform_edt(mc, sampling=self.cell_mm[::-1]) - 0.5 * float(np.linalg.norm(self.cell_mm))
        self.mask = m

    def cell_center_index(self, cells_zyx: np.ndarray) -> np.ndarray:
        """(N, 3) continuous (i, j, k) volume index of coarse cells' centres."""
        c = np.asarray(cells_zyx)[:, ::-1].astype(np.float64)
        return c * self.step + (self.step - 1) / 2.0

    def at(self, lps) -> float:
        ijk = self.volume.world_to_index(np.asarray(lps, dtype=np.float64)[None])[0]
        cell = np.floor((ijk + 0.5) / self.step).astype(int)[::-1]
        if np.any(cell < 0) or np.any(cell >= self.dist.shape):
            return -np.inf
        # the distance is 1-Lipschitz: subtract how far the point is from the cell centre
        cc = self.volume.index_to_world(self.cell_center_index(cell[None]))[0]
        return float(self.dist[tuple(cell)]) - float(np.linalg.norm(np.asarray(lps, dtype=np.float64) - cc))


def check_inside_lung(nodule: Nodule, dist: LungDistance) -> None:
    d = dist.at(nodule.center_lps)
    if d < nodule.body_extent_mm:
        raise InputError(
            f"A {nodule.diameter_mm:g} mm nodule at {tuple(round(c, 1) for c in nodule.center_lps)} mm (LPS) would "
            f"cross the pleura or leave the lung (it is {max(d, 0):.1f} mm deep); move it into the lung or make it "
            "smaller."
        )


def random_nodules(
    volume: Volume,
    n: int,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
    diameter_range: tuple[float, float] = (6.0, 20.0),
    lung: LungDistance | None = None,
) -> list[Nodule]:
    """``n`` nodules at random (seeded) places inside the lungs, none crossing the pleura or another nodule."""
    if n < 0:
        raise OptionError("The number of nodules must be 0 or more.")
    lo_d, hi_d = (float(v) for v in diameter_range)
    if not (DIAMETER_RANGE[0] <= lo_d <= hi_d <= DIAMETER_RANGE[1]):
        raise OptionError(f"Nodule diameters {lo_d:g}-{hi_d:g} mm must lie within 3-30 mm (min <= max).")
    kinds = list(kinds or KINDS)
    shapes = list(shapes or SHAPES)
    rng = np.random.default_rng(seed)
    dist = lung or LungDistance(volume)
    out: list[Nodule] = []
    for i in range(n):
        for _attempt in range(50):
            d = float(np.exp(rng.uniform(np.log(lo_d), np.log(hi_d))))
            kind = kinds[int(rng.integers(len(kinds)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            if kind == "calcified":
                d = min(d, 12.0) if lo_d <= 12.0 else d
            probe = Nodule(kind=kind, diameter_mm=d, shape=shape, seed=int(rng.integers(2**31)))
            need = probe.body_extent_mm + 1.0
            cells = np.argwhere(dist.dist >= need)
            if len(cells) == 0:
                continue
            cell = cells[int(rng.integers(len(cells)))]
            ijk = dist.cell_center_index(cell[None])[0]
            c = volume.index_to_world(ijk[None])[0]
            if any(np.linalg.norm(c - np.asarray(o.center_lps)) < probe.extent_mm + o.extent_mm + 2 for o in out):
                continue
            out.append(Nodule(kind=kind, diameter_mm=d, center_lps=c, shape=shape, seed=probe.seed))
            break
        else:
            raise InputError(
                f"Could not place nodule {i + 1} of {n} inside the lungs without crossing the pleura or another "
                "nodule; ask for fewer or smaller nodules."
            )
    return out
