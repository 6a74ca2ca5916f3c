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

Kind x shape (``KIND_PRIOR``, ``SHAPE_GIVEN_KIND``; see docs/nodules.md for the references): calcified nodules
are smooth (sphere/ellipsoid), pure ground glass is never spiculated, spiculation is a solid/part-solid margin.
``IMPOSSIBLE`` pairs raise :class:`OptionError` when asked for explicitly.

Location (``LOCATIONS``, ``LOCATION_MIX``): intraparenchymal (>= 3 mm from pleura and fissures), juxtapleural
(body abutting the costal/diaphragmatic pleura) or perifissural (solid, smooth, abutting an estimated fissure).

Insertion adds a seeded internal texture (``TEXTURE``: correlated noise, HU std and correlation length by kind)
and the CT's own point-spread function (:func:`ct_psf_sigma_mm`) so inserted nodules are no sharper than the CT.
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

# Kind mix of screening nodules and shape given kind (docs/nodules.md, "Kind x shape"): probabilities.
KIND_PRIOR = {"solid": 0.60, "part_solid": 0.10, "ggo": 0.15, "calcified": 0.15}
SHAPE_GIVEN_KIND = {
    "solid": {"sphere": 0.30, "ellipsoid": 0.30, "lobulated": 0.25, "spiculated": 0.15},
    "part_solid": {"sphere": 0.15, "ellipsoid": 0.30, "lobulated": 0.30, "spiculated": 0.25},
    "ggo": {"sphere": 0.35, "ellipsoid": 0.45, "lobulated": 0.20, "spiculated": 0.0},
    "calcified": {"sphere": 0.60, "ellipsoid": 0.40, "lobulated": 0.0, "spiculated": 0.0},
}
IMPOSSIBLE = {(k, s): why for k, s, why in (
    ("ggo", "spiculated", "pure ground-glass nodules are not spiculated (spiculation is a solid margin)"),
    ("calcified", "spiculated", "calcified (benign) nodules have smooth margins"),
    ("calcified", "lobulated", "calcified (benign) nodules have smooth margins"),
)}
LOCATIONS = ("intraparenchymal", "juxtapleural", "perifissural")
LOCATION_MIX = {"intraparenchymal": 0.50, "juxtapleural": 0.30, "perifissural": 0.20}
# perifissural nodules are intrapulmonary lymph nodes: solid, smooth, oval/lentiform (Ahn 2010; de Hoop 2012)
PERIFISSURAL_SHAPES = {"ellipsoid": 0.7, "sphere": 0.3}
PERIFISSURAL_MAX_D = 10.0
CONTACT_GAP_MM = 1.5  # juxtapleural / perifissural: surface within this distance of the pleura / fissure
CLEAR_GAP_MM = 3.0  # intraparenchymal: at least this far from pleura and fissures
# internal texture: (HU standard deviation, correlation sigma in mm); part-solid: ground glass / core
TEXTURE = {"solid": (12.0, 1.5), "ggo": (35.0, 2.0), "part_solid": (35.0, 2.0), "calcified": (60.0, 1.0)}
CORE_TEXTURE_HU = 12.0
# in-plane PSF of a standard (soft-tissue) CT kernel: MTF50 ~ 0.4 lp/mm -> Gaussian sigma 0.47 mm
KERNEL_SIGMA_XY_MM = 0.47


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
    location: str = "unspecified"
    texture: bool = True
    blur: bool = True
    placement: dict | None = None
    short_axis_lps: Sequence[float] | None = None  # ellipsoid: lentiform, shortest axis along this direction
    _geo: dict = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise OptionError(f"Unknown nodule kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        if self.shape not in SHAPES:
            raise OptionError(f"Unknown nodule shape {self.shape!r}; use one of {', '.join(SHAPES)}.")
        if (self.kind, self.shape) in IMPOSSIBLE:
            why = IMPOSSIBLE[(self.kind, self.shape)]
            raise OptionError(f"A {self.shape} {self.kind} nodule does not occur: {why}; "
                              f"choose a shape among {', '.join(allowed_shapes(self.kind))}.")
        if self.location not in LOCATIONS + ("unspecified",):
            raise OptionError(f"Unknown nodule location {self.location!r}; use one of {', '.join(LOCATIONS)}.")
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
        if self.short_axis_lps is not None:
            a = np.asarray(self.short_axis_lps, dtype=np.float64).ravel()[:3]
            if a.size != 3 or not np.isfinite(a).all() or np.linalg.norm(a) == 0:
                raise OptionError("short_axis_lps must be a non-zero direction (x, y, z) in LPS.")
            self.short_axis_lps = tuple(float(v) for v in a / np.linalg.norm(a))
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
        if self.shape == "ellipsoid" and self.short_axis_lps is not None:
            # lentiform (perifissural lymph node): flat along the given direction, at a random in-plane angle
            axes = np.array([rng.uniform(1.2, 1.5), rng.uniform(1.0, 1.2), rng.uniform(0.45, 0.6)])
            axes /= np.cbrt(axes.prod())
            a = np.asarray(self.short_axis_lps, dtype=np.float64)
            u = q[:, 0] - (q[:, 0] @ a) * a
            if np.linalg.norm(u) < 1e-6:
                u = q[:, 1] - (q[:, 1] @ a) * a
            u /= np.linalg.norm(u)
            q = np.stack([u, np.cross(a, u), a], axis=1)
        elif self.shape == "ellipsoid":
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
    def half_thickness_mm(self) -> float:
        """Half-thickness along ``short_axis_lps`` (lentiform ellipsoid), else the body extent."""
        if self.shape == "ellipsoid" and self.short_axis_lps is not None:
            return self.radius_mm * float(self._geo["axes"][2])
        return self.body_extent_mm

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


def allowed_shapes(kind: str) -> list[str]:
    """Shapes that a nodule of ``kind`` can have (``SHAPE_GIVEN_KIND`` > 0)."""
    return [s for s in SHAPES if SHAPE_GIVEN_KIND[kind][s] > 0]


def ct_psf_sigma_mm(volume: Volume) -> np.ndarray:
    """Extra Gaussian sigma (mm, along the array's x, y, z) that turns an analytic nodule, already averaged over
    each voxel (partial volume = a box of one voxel), into one as sharp as the CT: total in-plane sigma
    ``max(KERNEL_SIGMA_XY_MM, dx/sqrt(12))`` (a standard kernel, MTF50 ~ 0.4 lp/mm), total z sigma = the slice
    sensitivity profile, FWHM = the DICOM SliceThickness when recorded (else the slice spacing), / 2.355; the voxel
    box (sigma = spacing/sqrt(12)) is subtracted in quadrature."""
    sp = np.asarray(volume.spacing, dtype=np.float64)
    thick = None
    try:
        thick = float((volume.meta.get("dicom") or {}).get("SliceThickness"))
    except (TypeError, ValueError):
        thick = None
    if not thick or not np.isfinite(thick) or thick <= 0:
        thick = float(sp[2])
    box = sp / math.sqrt(12.0)
    total = np.array([max(KERNEL_SIGMA_XY_MM, box[0]), max(KERNEL_SIGMA_XY_MM, box[1]),
                      max(thick / 2.3548, sp[2] / math.sqrt(12.0))])
    return np.sqrt(np.maximum(total**2 - sp**2 / 12.0, 0.0))


def _texture(nodule: Nodule, shape_zyx, spacing_xyz, core: np.ndarray | None) -> np.ndarray:
    """Seeded zero-mean correlated noise (HU) on the patch grid: white noise smoothed by a Gaussian of the kind's
    correlation sigma, rescaled to the kind's HU standard deviation (``TEXTURE``)."""
    amp, corr = TEXTURE[nodule.kind]
    rng = np.random.default_rng([int(nodule.seed) & 0xFFFFFFFF, 7919])
    w = rng.normal(size=shape_zyx)
    sig = [corr / float(s) for s in spacing_xyz[::-1]]
    f = ndimage.gaussian_filter(w, sig, mode="wrap")
    f = (f - f.mean()) / max(float(f.std()), 1e-9)  # unit standard deviation on this patch
    f = np.clip(f, -3.0, 3.0)
    tex = f * amp
    if core is not None:
        tex = np.where(core, f * CORE_TEXTURE_HU, tex)
    return tex


def nodule_patch(volume: Volume, nodule: Nodule, base: np.ndarray | None = None):
    """New HU on the nodule's sub-box of ``volume``: returns (slices (z,y,x), new_patch, occupancy fraction).

    Each voxel is supersampled (sub-spacing <= 0.5 mm, 2..4 per axis) for partial-volume edges; solid,
    part-solid and calcified nodules replace the tissue by their fraction, ground glass keeps denser tissue
    (vessels) with a max blend. With ``nodule.texture`` the nodule's HU carries seeded correlated noise (clipped to
    its kind's range); with ``nodule.blur`` the change is convolved with the CT's PSF (:func:`ct_psf_sigma_mm`),
    so the patch is padded by three PSF sigmas.
    """
    psf = ct_psf_sigma_mm(volume) if nodule.blur else np.zeros(3)
    sp = np.asarray(volume.spacing, dtype=np.float64)
    pad = 1 + int(np.ceil((3.0 * psf / sp).max())) if nodule.blur else 1
    box = _index_box(volume, nodule.center_lps, nodule.extent_mm, pad=pad)
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
    if nodule.texture:
        core = None
        if nodule.kind == "part_solid":
            core = mean_hu > 0.5 * (CORE_HU + float(nodule.hu))
        lo_hu, hi_hu = HU_RANGE[nodule.kind]
        if nodule.kind == "part_solid":
            lo_hu, hi_hu = -1000.0, HU_RANGE["solid"][1]
        mean_hu = np.where(frac > 0, np.clip(mean_hu + _texture(nodule, old.shape, sp, core), lo_hu, hi_hu), 0.0)
    new = old * (1.0 - frac) + mean_hu * frac
    if nodule.kind == "ggo":
        new = np.maximum(old, new)
    if nodule.blur and np.any(psf > 0):
        delta = ndimage.gaussian_filter(new - old, (psf / sp)[::-1], mode="constant", truncate=3.0)
        new = old + delta
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
# Fissure model (docs/nodules.md, "Fissures"): in each lung's sagittal (y, z) extent, normalised by its
# anterior-posterior width W and base-apex height H (1st-99th percentiles of the lung voxels), the oblique
# (major) fissure is the plane through (posterior edge, base + OBLIQUE_POST_Z * H) and
# (anterior edge + OBLIQUE_ANT_Y * W, base), extruded left-right; the right lung's horizontal (minor) fissure is
# the half-plane z = base + HORIZONTAL_Z * H anterior to the oblique one.
OBLIQUE_POST_Z = 0.70
OBLIQUE_ANT_Y = 0.25
HORIZONTAL_Z = 0.60


def _fissure_params(pts: np.ndarray) -> list[dict]:
    """Per lung (split at the midline x of the lung voxels, LPS: +x is the patient's left) the fissure planes."""
    out = []
    if len(pts) == 0:
        return out
    x_mid = 0.5 * (np.percentile(pts[:, 0], 1) + np.percentile(pts[:, 0], 99))
    for side, sel in (("right", pts[:, 0] < x_mid), ("left", pts[:, 0] >= x_mid)):
        q = pts[sel]
        if len(q) < 10:
            continue
        z0, z1 = np.percentile(q[:, 2], [1, 99])
        ya, yp = np.percentile(q[:, 1], [1, 99])
        H, W = z1 - z0, yp - ya
        A = np.array([yp, z0 + OBLIQUE_POST_Z * H])
        B = np.array([ya + OBLIQUE_ANT_Y * W, z0])
        t = (A - B) / np.linalg.norm(A - B)
        n = np.array([-t[1], t[0]])
        prm = {"side": side, "x_mid": float(x_mid), "B": B, "n": n, "z0": float(z0), "H": float(H)}
        if side == "right":
            zh = z0 + HORIZONTAL_Z * H
            prm["zh"] = float(zh)
            prm["y_int"] = float(B[0] + (zh - z0) / (OBLIQUE_POST_Z * H) * (A[0] - B[0]))
        out.append(prm)
    return out


def fissure_distances(pts: np.ndarray, params: list[dict]) -> np.ndarray:
    """(N, 2) distances (mm) from LPS points to their lung's oblique and horizontal fissure (inf where none)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    out = np.full((len(pts), 2), np.inf)
    for prm in params:
        sel = pts[:, 0] < prm["x_mid"] if prm["side"] == "right" else pts[:, 0] >= prm["x_mid"]
        yz = pts[sel][:, 1:3]
        out[sel, 0] = np.abs((yz - prm["B"]) @ prm["n"])
        if "zh" in prm:
            dz = np.abs(yz[:, 1] - prm["zh"])
            dy = np.maximum(yz[:, 0] - prm["y_int"], 0.0)
            out[sel, 1] = np.hypot(dz, dy)
    return out


def fissure_distance(pts: np.ndarray, params: list[dict]) -> np.ndarray:
    """Distance (mm) from LPS points to the nearest modelled fissure of their lung (inf where no model)."""
    return fissure_distances(pts, params).min(axis=1)


def fissure_normal(pt, params: list[dict]) -> np.ndarray:
    """Unit LPS normal of the modelled fissure nearest to ``pt`` (for lentiform perifissural nodules)."""
    p = np.asarray(pt, dtype=np.float64).ravel()
    best, normal = np.inf, np.array([0.0, 0.0, 1.0])
    for prm in params:
        if (p[0] < prm["x_mid"]) != (prm["side"] == "right"):
            continue
        yz = p[1:3]
        d = abs(float((yz - prm["B"]) @ prm["n"]))
        if d < best:
            best, normal = d, np.array([0.0, prm["n"][0], prm["n"][1]])
        if "zh" in prm:
            dz, dy = yz[1] - prm["zh"], max(yz[0] - prm["y_int"], 0.0)
            dh = math.hypot(dz, dy)
            if dh < best:
                best = dh
                normal = np.array([0.0, dy, dz]) / max(dh, 1e-9) if dy > 0 else np.array([0.0, 0.0, 1.0])
    return normal


class LungDistance:
    """Distance (mm) from each lung voxel to the outside of the lung mask, on a grid of about 2 mm; and, on the
    same cells, the distance to the modelled fissures (``fissure_dist``, computed on first use)."""

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
        self.dist = (ndimage.distance_transform_edt(mc, sampling=self.cell_mm[::-1])
                     - 0.5 * float(np.linalg.norm(self.cell_mm)))
        self.mask = m
        self._fissure = None

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

    @property
    def fissure_params(self) -> list[dict]:
        self._fissures()
        return self._fissure[0]

    @property
    def fissure_dist(self) -> np.ndarray:
        """Distance (mm) from each lung cell's centre to the nearest modelled fissure (inf outside the lung)."""
        self._fissures()
        return self._fissure[1]

    @property
    def fissure_dist_other(self) -> np.ndarray:
        """Distance (mm) from each lung cell's centre to the other (second nearest) fissure of its lung (inf if
        none): a lentiform nodule flat on one fissure must stay clear of the other one."""
        self._fissures()
        return self._fissure[2]

    def _fissures(self):
        if self._fissure is None:
            cells = np.argwhere(self.dist > 0)
            pts = self.volume.index_to_world(self.cell_center_index(cells)) if len(cells) else np.zeros((0, 3))
            prm = _fissure_params(pts)
            fd = np.full(self.dist.shape, np.inf)
            fo = np.full(self.dist.shape, np.inf)
            if len(cells):
                both = fissure_distances(pts, prm)
                fd[tuple(cells.T)] = both.min(axis=1)
                fo[tuple(cells.T)] = both.max(axis=1)
            self._fissure = (prm, fd, fo)

    def fissure_at(self, lps) -> float:
        return float(fissure_distance(np.asarray(lps, dtype=np.float64)[None], self.fissure_params)[0])


def check_inside_lung(nodule: Nodule, dist: LungDistance) -> None:
    d = dist.at(nodule.center_lps)
    if d < nodule.body_extent_mm:
        raise InputError(
            f"A {nodule.diameter_mm:g} mm nodule at {tuple(round(c, 1) for c in nodule.center_lps)} mm (LPS) would "
            f"cross the pleura or leave the lung (it is {max(d, 0):.1f} mm deep); move it into the lung or make it "
            "smaller."
        )


# frontal views for which random placement keeps the 2-D boxes apart: parallel, PA and AP at SAD >= this
_FRONTAL_SAD_MM = 900.0
_BOX_MARGIN_MM = 2.0
POSITIONS_PER_SIZE = 20


def _frontal_boxes(volume: Volume, c: np.ndarray, R: float) -> np.ndarray:
    """(3, 4) boxes [u0, u1, v0, v1] (mm at the isocentre) of a sphere of radius R at c, seen from the front
    with a parallel beam and with PA and AP cone beams whose source is ``_FRONTAL_SAD_MM`` from the CT centre."""
    iso = np.asarray(volume.center_lps, dtype=np.float64)
    d = np.asarray(c, dtype=np.float64) - iso
    out = []
    for eps in (0.0, 1.0 / _FRONTAL_SAD_MM, -1.0 / _FRONTAL_SAD_MM):
        m = 1.0 / (1.0 - d[1] * eps)  # PA: source posterior (+y); AP: anterior
        r = R * m + _BOX_MARGIN_MM / 2.0
        out.append([d[0] * m - r, d[0] * m + r, d[2] * m - r, d[2] * m + r])
    return np.asarray(out)


def _geometry_box(geometry, c: np.ndarray, R: float) -> np.ndarray:
    cube = np.asarray(c) + np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float) * R
    P = np.asarray(geometry.projection_matrix)
    h = np.concatenate([cube, np.ones((8, 1))], 1) @ P.T
    uv = h[:, :2] / h[:, 2:3]
    return np.array([[uv[:, 0].min() - 1.0, uv[:, 0].max() + 1.0, uv[:, 1].min() - 1.0, uv[:, 1].max() + 1.0]])


def _boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """True if any pair of corresponding boxes overlaps."""
    return bool(np.any((a[:, 0] < b[:, 1]) & (b[:, 0] < a[:, 1]) & (a[:, 2] < b[:, 3]) & (b[:, 2] < a[:, 3])))


def _finite(v: float):
    return round(v, 3) if np.isfinite(v) else None


def _choices(kinds, shapes, location: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    if location == "perifissural":
        pairs = [("solid", s) for s in shapes if "solid" in kinds and PERIFISSURAL_SHAPES.get(s, 0) > 0]
        w = np.array([PERIFISSURAL_SHAPES[s] for _, s in pairs])
    else:
        pairs = [(k, s) for k in kinds for s in shapes if KIND_PRIOR[k] * SHAPE_GIVEN_KIND[k][s] > 0]
        w = np.array([KIND_PRIOR[k] * SHAPE_GIVEN_KIND[k][s] for k, s in pairs])
    return pairs, (w / w.sum() if len(w) else w)


def joint_distribution(kinds: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                       location: str = "intraparenchymal") -> dict:
    """{(kind, shape): probability} that :func:`random_nodules` draws from for one location (documented table)."""
    pairs, w = _choices(list(kinds or KINDS), list(shapes or SHAPES), location)
    return {p: float(x) for p, x in zip(pairs, w)}


def _location_plan(location, kinds, shapes) -> tuple[list[str], np.ndarray]:
    if location is None or (isinstance(location, str) and location == "random"):
        locs = list(LOCATIONS)
    elif isinstance(location, str):
        locs = [location]
    else:
        locs = list(location)
    bad = [l for l in locs if l not in LOCATIONS]
    if bad:
        raise OptionError(f"Unknown nodule location {', '.join(map(str, bad))}; "
                          f"use random or one of {', '.join(LOCATIONS)}.")
    usable = [l for l in locs if len(_choices(kinds, shapes, l)[0])]
    if not usable:
        if locs == ["perifissural"]:
            raise OptionError("Perifissural nodules are solid and smooth (sphere or ellipsoid, intrapulmonary lymph "
                              "nodes); allow the solid kind and a smooth shape, or choose another location.")
        why = "; ".join(IMPOSSIBLE[(k, s)] for k in kinds for s in shapes if (k, s) in IMPOSSIBLE)
        raise OptionError(f"No nodule can be both of kind {','.join(kinds)} and of shape {','.join(shapes)} ({why}); "
                          "allow another shape or kind.")
    w = np.array([LOCATION_MIX[l] for l in usable])
    return usable, w / w.sum()


def random_nodules(
    volume: Volume,
    n: int,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
    diameter_range: tuple[float, float] = (6.0, 20.0),
    lung: LungDistance | None = None,
    location: str | Sequence[str] = "random",
    avoid_overlap: bool = True,
    geometry=None,
    max_attempts: int = 1000,
) -> list[Nodule]:
    """``n`` nodules at random (seeded) places inside the lungs, none crossing the pleura or another nodule.

    Kind and shape are drawn from the joint distribution ``KIND_PRIOR`` x ``SHAPE_GIVEN_KIND`` restricted to
    ``kinds``/``shapes`` (impossible combinations never drawn; a request with no possible pair raises
    :class:`OptionError`). ``location``: ``random`` (``LOCATION_MIX``), one of ``LOCATIONS`` or a list of them.
    With ``avoid_overlap`` (default) a nodule whose projected box would overlap an earlier one is re-drawn: boxes
    in ``geometry`` when given, else frontal (PA, AP, parallel) boxes; each nodule's ``placement`` records its
    location, how many draws were rejected and why, and its gap to the pleura / fissure.
    """
    if n < 0:
        raise OptionError("The number of nodules must be 0 or more.")
    lo_d, hi_d = (float(v) for v in diameter_range)
    if not (DIAMETER_RANGE[0] <= lo_d <= hi_d <= DIAMETER_RANGE[1]):
        raise OptionError(f"Nodule diameters {lo_d:g}-{hi_d:g} mm must lie within 3-30 mm (min <= max).")
    kinds = list(kinds or KINDS)
    shapes = list(shapes or SHAPES)
    for name, vals, allowed in (("kind", kinds, KINDS), ("shape", shapes, SHAPES)):
        bad = [v for v in vals if v not in allowed]
        if bad:
            raise OptionError(f"Unknown nodule {name} {', '.join(map(str, bad))}; use {', '.join(allowed)}.")
    locs, loc_w = _location_plan(location, kinds, shapes)
    rng = np.random.default_rng(seed)
    dist = lung or LungDistance(volume)
    out: list[Nodule] = []
    boxes: list[np.ndarray] = []
    for i in range(n):
        rejected = {"no_room": 0, "overlap_3d": 0, "overlap_2d": 0}
        # location, kind and shape are drawn once per nodule (re-draws change only size and place), so crowding
        # does not bias the mix towards the easiest location
        loc = locs[int(rng.choice(len(locs), p=loc_w))]
        pairs, w = _choices(kinds, shapes, loc)
        kind, shape = pairs[int(rng.choice(len(pairs), p=w))]
        cells = None
        for attempt in range(max_attempts):
            if attempt % POSITIONS_PER_SIZE == 0:  # a new size (and shape seed) every few positions
                d = float(np.exp(rng.uniform(np.log(lo_d), np.log(hi_d))))
                if kind == "calcified":
                    d = min(d, 12.0) if lo_d <= 12.0 else d
                if loc == "perifissural":
                    d = min(d, PERIFISSURAL_MAX_D) if lo_d <= PERIFISSURAL_MAX_D else d
                lentiform = loc == "perifissural" and shape == "ellipsoid"
                probe = Nodule(kind=kind, diameter_mm=d, shape=shape, seed=int(rng.integers(2**31)),
                               short_axis_lps=(0.0, 0.0, 1.0) if lentiform else None)
                body = probe.body_extent_mm
                touch = probe.half_thickness_mm  # perifissural: its extent towards the fissure
                if loc == "intraparenchymal":
                    ok = dist.dist >= body + CLEAR_GAP_MM
                    ok &= dist.fissure_dist >= body + CLEAR_GAP_MM
                elif loc == "juxtapleural":
                    ok = (dist.dist >= body) & (dist.dist <= body + CONTACT_GAP_MM)
                else:
                    fd = dist.fissure_dist
                    ok = (dist.dist >= body + 1.0) & (fd >= touch) & (fd <= touch + CONTACT_GAP_MM)
                    ok &= dist.fissure_dist_other >= body
                cells = np.argwhere(ok)
            if len(cells) == 0:
                rejected["no_room"] += 1
                continue
            cell = cells[int(rng.integers(len(cells)))]
            ijk = dist.cell_center_index(cell[None])[0]
            c = volume.index_to_world(ijk[None])[0]
            if any(np.linalg.norm(c - np.asarray(o.center_lps)) < probe.extent_mm + o.extent_mm + 2 for o in out):
                rejected["overlap_3d"] += 1
                continue
            box = None
            if avoid_overlap:
                box = (_geometry_box(geometry, c, probe.extent_mm) if geometry is not None
                       else _frontal_boxes(volume, c, probe.extent_mm))
                if any(_boxes_overlap(box, b) for b in boxes):
                    rejected["overlap_2d"] += 1
                    continue
            placement = {"location": loc, "redraws": int(sum(rejected.values())), "rejected": dict(rejected),
                         "pleura_gap_mm": round(float(dist.dist[tuple(cell)]) - body, 3),
                         "fissure_gap_mm": _finite(float(dist.fissure_dist[tuple(cell)])
                                                   - (touch if loc == "perifissural" else body)),
                         "overlap_avoided": "geometry" if (avoid_overlap and geometry is not None)
                         else ("frontal" if avoid_overlap else "no")}
            axis = tuple(float(v) for v in fissure_normal(c, dist.fissure_params)) if probe.short_axis_lps else None
            out.append(Nodule(kind=kind, diameter_mm=d, center_lps=c, shape=shape, seed=probe.seed, location=loc,
                              placement=placement, short_axis_lps=axis))
            if box is not None:
                boxes.append(box)
            break
        else:
            raise InputError(
                f"Could not place nodule {i + 1} of {n} inside the lungs without crossing the pleura or another "
                f"nodule{' or overlapping another label' if avoid_overlap else ''} after {max_attempts} draws "
                f"({rejected}); ask for fewer or smaller nodules"
                f"{' or allow overlapping labels (avoid_overlap=False)' if avoid_overlap else ''}."
            )
    return out
