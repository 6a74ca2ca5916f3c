"""Render a DRR from a CT in HU: HU -> basis materials -> projection -> Beer-Lambert -> noise -> log/window.

``render_drr`` projects the CT once. In ``poly`` mode it projects two basis volumes (water-equivalent and
bone-equivalent fractions, see :mod:`dxr_core.drr.physics`) in one pass (two channels) and sums the spectrum per
pixel; in ``mono`` mode it projects mu(E) directly (one channel). The projections are kept on the :class:`DRR`
(``basis`` in poly mode, ``line_integral`` always) so that :func:`add_volume_delta` can add a small 3-D change
(an inserted nodule) by re-tracing only the rays in its projected bounding box and re-applying the physics there.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dxr_core.drr.geometry import ConeBeamGeometry
from dxr_core.drr.physics import Physics, hu_to_basis
from dxr_core.drr.projector import (_LAYOUT, NONFINITE_MESSAGE, PlaneSource, _check_projection, _check_volume_values,
                                    project_tensor)
from dxr_core.errors import GeometryError, InputError

__all__ = ["DRR", "render_drr", "add_volume_delta", "apply_physics", "primary_transmission"]


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class DRR:
    """A rendered radiograph and everything needed to interpret or extend it.

    image: float32 (rows, cols) in [0, 1], bone bright (window in ``physics.window``).
    line_integral: float32 (rows, cols), noise-free integral of mu (1/mm) x mm at ``physics.mean_energy_kev``.
    basis: float32 (2, rows, cols) projected water-fraction and bone-fraction path lengths (mm), or None
        (mono renders keep it only with ``keep_basis=True``).
    log_image: float32 (rows, cols) = -ln(I/I0) after noise (poly: with beam hardening), before the window.
    acquisition: the :class:`~dxr_core.drr.acquisition.Acquisition` applied (None: today's raw chain), with
        ``acquisition_record`` (sidecar ``"acquisition"``), ``primary`` (noise-free primary I_p/I_0, no grid),
        ``scatter`` (scatter fluence, same units, no grid) and ``spr`` (scatter-to-primary ratio at the detector,
        after the grid) when the chain ran.
    """

    image: np.ndarray
    line_integral: np.ndarray
    geometry: ConeBeamGeometry
    physics: Physics
    meta: dict[str, Any] = field(default_factory=dict)
    basis: np.ndarray | None = None
    log_image: np.ndarray | None = None
    seed: int | None = None
    source: Any = field(default=None, repr=False)  # the HU Volume it came from (not serialised)
    timings: dict[str, float] = field(default_factory=dict)
    acquisition: Any = None
    acquisition_record: dict[str, Any] | None = None
    primary: np.ndarray | None = None
    scatter: np.ndarray | None = None
    spr: np.ndarray | None = None

    @property
    def projection_matrix(self) -> np.ndarray:
        return self.geometry.projection_matrix

    def sidecar(self) -> dict[str, Any]:
        """JSON-able record: geometry (with the 3x4 projection matrix), physics, source CT meta, seed."""
        src: dict[str, Any] = {}
        for k, v in (self.meta or {}).items():
            if isinstance(v, np.ndarray) and v.size <= 16:
                v = v.tolist()
            try:
                json.dumps(v)
                src[str(k)] = v
            except (TypeError, ValueError):
                src[str(k)] = str(v)
        return {
            "kind": "drr",
            "geometry": self.geometry.to_dict(),
            "projection_matrix": self.geometry.projection_matrix.tolist(),
            "physics": self.physics.to_dict(),
            "image": {"rows": int(self.image.shape[0]), "cols": int(self.image.shape[1]), "dtype": "float32",
                      "range": [0.0, 1.0], "window_log": list(self.physics.window),
                      "convention": "bone bright, air dark (MONOCHROME2)"},
            "seed": self.seed,
            "source": src,
            "acquisition": self.acquisition_record if self.acquisition_record is not None else _off_record(),
        }


def body_span_mask(hu: torch.Tensor, air_hu: float, dim: int) -> torch.Tensor:
    """True inside each line's body span along ``dim``: from its first to its last voxel above ``air_hu`` (NaN
    counts as above); lines with no such voxel are all False. Mirrors the native kernel's air clipping."""
    keep = ~(hu <= air_hu)
    fwd = keep.cumsum(dim) > 0
    bwd = keep.flip(dim).cumsum(dim).flip(dim) > 0
    return fwd & bwd


def _hu_plane_source(hu: np.ndarray, physics: Physics, channels: int, device: torch.device) -> PlaneSource:
    """Plane stacks of the basis volumes (channels=2) or of mu(E) (channels=1), built straight from HU.

    Air clipping (``physics.air_hu``, None: off): along each volume row parallel to the detector rows, voxels
    outside [first, last voxel above air_hu] count as 0 (air outside the patient; see Physics.air_hu). The
    native kernel does it while converting each row; ``make`` (torch path) does the same per converted block."""
    hu_t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))
    hu_bone = physics.hu_bone
    mw, mb = physics.basis_mu(physics.energy_kev)
    mw, mb = float(mw[0]), float(mb[0])
    air = physics.air_hu

    def make(axis: int, along_w: bool = True) -> torch.Tensor:
        perm = _LAYOUT[axis][0]
        view = hu_t[None].permute(*perm)  # (N, 1, H, W) view
        n = view.shape[0]
        out = torch.empty((n, channels, view.shape[2], view.shape[3]), dtype=torch.float32, device=device)
        step = max(1, (1 << 22) // max(1, view.shape[2] * view.shape[3]))
        for i in range(0, n, step):
            blk = view[i:i + step, 0].to(device)
            if not bool(torch.isfinite(blk).all()):  # part of this conversion pass (the clamp would hide -inf)
                raise InputError(NONFINITE_MESSAGE)
            w, b = hu_to_basis(blk, hu_bone)
            if air is not None:
                inside = body_span_mask(blk, air, -1 if along_w else -2)
                w = torch.where(inside, w, 0.0)
                b = torch.where(inside, b, 0.0)
            if channels == 2:
                out[i:i + step, 0] = w
                out[i:i + step, 1] = b
            else:
                out[i:i + step, 0] = w * mw + b * mb
        return out

    z, y, x = hu.shape
    raw = hu_t.numpy()[None] if device.type == "cpu" else None  # native kernel converts HU per tap (no copy)
    transfer = (1 if channels == 2 else 2, mw, mb, float(hu_bone))
    return PlaneSource((z, y, x), channels, device, make=make, raw=raw, transfer=transfer, air=air)


def _off_record() -> dict[str, Any]:
    from dxr_core.drr.acquisition import off_record

    return off_record()


def primary_transmission(physics: Physics, line_integral: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Noise-free primary I/I0 (float32): poly from the basis projections, mono from the line integral."""
    if physics.mode == "poly":
        if basis is None:
            raise InputError("A poly render needs the two basis projections; render with physics mode 'poly'.")
        b = torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32))
        return physics.transmission(b[0], b[1]).numpy()
    return np.exp(-np.asarray(line_integral, dtype=np.float64)).astype(np.float32)


def apply_physics(physics: Physics, line_integral: np.ndarray, basis: np.ndarray | None,
                  seed) -> tuple[np.ndarray, np.ndarray]:
    """(image, log_image) from projections: Beer-Lambert (mono or poly), noise, -ln, window."""
    if physics.mode == "poly":
        if basis is None:
            raise InputError("A poly render needs the two basis projections; render with physics mode 'poly'.")
        b = torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32))
        t = physics.transmission(b[0], b[1]).numpy()
    else:
        t = np.exp(-np.asarray(line_integral, dtype=np.float64)).astype(np.float32)
    t = physics.apply_noise(t, seed)
    log_img = (-np.log(np.maximum(t, 1e-30))).astype(np.float32)
    return physics.to_image(log_img), log_img


def render_drr(volume_hu, geometry: ConeBeamGeometry, physics: Physics | None = None, seed: int | None = None,
               device: str | torch.device | None = "cpu", keep_basis: bool | None = None,
               acquisition=None) -> DRR:
    """Render a DRR of ``volume_hu`` (a :class:`dxr_core.volume.Volume` in HU) with ``geometry``.

    physics: default ``Physics()`` (mono 60 keV, no noise; air outside the body clipped at ``air_hu`` = -950 HU,
    see :class:`Physics`). seed: noise seed (same seed, same image).
    device: "cpu" (default), "cuda", or None (CUDA when available). keep_basis: keep the two basis projections
    (always in poly mode; default off in mono mode, where ``line_integral`` is sufficient for
    :func:`add_volume_delta`).
    acquisition: an :class:`~dxr_core.drr.acquisition.Acquisition` (scatter, grid, detector, processing; e.g. from
    :func:`dxr_core.drr.presets.preset_acquisition`); None or every step off: today's chain, bit for bit.
    """
    physics = physics or Physics()
    if not isinstance(geometry, ConeBeamGeometry):
        raise GeometryError("geometry must be a ConeBeamGeometry (use make_geometry(volume, view=...)).")
    _check_volume_values(volume_hu.array)
    dev = _device(device)
    t0 = time.perf_counter()
    channels = 2 if (physics.mode == "poly" or keep_basis) else 1
    src = _hu_plane_source(volume_hu.array, physics, channels, dev)
    proj = project_tensor(src, volume_hu.index_to_world_matrix, geometry)  # (C, rows, cols)
    del src
    _check_projection(proj, volume_hu.array)  # NaN/inf voxels that rays read (large volumes: not pre-checked)
    t1 = time.perf_counter()
    if channels == 2:
        basis = proj.cpu().numpy()
        mw, mb = physics.basis_mu(physics.mean_energy_kev)
        line = (basis[0] * float(mw[0]) + basis[1] * float(mb[0])).astype(np.float32)
    else:
        basis = None
        line = proj[0].cpu().numpy()
    if acquisition is not None and acquisition.active:
        from dxr_core.drr.acquisition import apply_acquisition

        prim = primary_transmission(physics, line, basis)
        t2 = time.perf_counter()
        res = apply_acquisition(acquisition, physics, geometry, prim, seed)
        return DRR(image=res["image"], line_integral=line, geometry=geometry, physics=physics,
                   meta=dict(volume_hu.meta), basis=basis, log_image=res["log_image"], seed=seed, source=volume_hu,
                   timings={"project_s": t1 - t0, "physics_s": t2 - t1, **res["timings"]}, acquisition=acquisition,
                   acquisition_record=res["record"], primary=prim, scatter=res["scatter"], spr=res["spr"])
    image, log_img = apply_physics(physics, line, basis, seed)
    t2 = time.perf_counter()
    return DRR(image=image, line_integral=line, geometry=geometry, physics=physics, meta=dict(volume_hu.meta),
               basis=basis, log_image=log_img, seed=seed, source=volume_hu,
               timings={"project_s": t1 - t0, "physics_s": t2 - t1})


def _sample_base_hu(source, delta) -> np.ndarray:
    """HU of ``source`` at the voxel centres of ``delta`` (exact slice when grids align, else trilinear)."""
    ijk0 = source.world_to_index(delta.index_to_world(np.zeros(3)))
    m = np.linalg.inv(source.index_to_world_matrix) @ delta.index_to_world_matrix
    if np.allclose(m[:3, :3], np.eye(3), atol=1e-6) and np.allclose(ijk0, np.round(ijk0), atol=1e-4):
        i0, j0, k0 = (int(round(v)) for v in ijk0)
        dz, dy, dx = delta.array.shape
        sz, sy, sx = source.array.shape
        out = np.full((dz, dy, dx), -1000.0, dtype=np.float32)
        zs, ys, xs = (slice(max(k0, 0), min(k0 + dz, sz)), slice(max(j0, 0), min(j0 + dy, sy)),
                      slice(max(i0, 0), min(i0 + dx, sx)))
        if zs.stop > zs.start and ys.stop > ys.start and xs.stop > xs.start:
            out[zs.start - k0:zs.stop - k0, ys.start - j0:ys.stop - j0, xs.start - i0:xs.stop - i0] = \
                source.array[zs, ys, xs]
        return out
    # general case: trilinear resampling with grid_sample (air outside)
    dz, dy, dx = delta.array.shape
    kk, jj, ii = np.meshgrid(np.arange(dz), np.arange(dy), np.arange(dx), indexing="ij")
    idx = np.stack([ii, jj, kk], -1).reshape(-1, 3).astype(np.float64)
    sidx = (idx @ m[:3, :3].T + m[:3, 3])
    sz, sy, sx = source.array.shape
    g = np.stack([(2 * sidx[:, 0] + 1) / sx - 1, (2 * sidx[:, 1] + 1) / sy - 1, (2 * sidx[:, 2] + 1) / sz - 1], -1)
    vol = torch.from_numpy(np.ascontiguousarray(source.array, dtype=np.float32))[None, None] + 1000.0
    res = F.grid_sample(vol, torch.as_tensor(g, dtype=torch.float32)[None, None, None], align_corners=False)
    return (res.reshape(dz, dy, dx).numpy() - 1000.0).astype(np.float32)


def projected_box(geometry: ConeBeamGeometry, volume, margin: int = 1) -> tuple[int, int, int, int] | None:
    """Half-open pixel box (r0, r1, c0, c1) covering the projection of ``volume``'s grid, or None if off-detector."""
    cr = geometry.project_points(volume.corners_lps())
    c0 = int(np.floor(cr[:, 0].min())) - margin
    c1 = int(np.ceil(cr[:, 0].max())) + margin + 1
    r0 = int(np.floor(cr[:, 1].min())) - margin
    r1 = int(np.ceil(cr[:, 1].max())) + margin + 1
    rows, cols = geometry.size
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, rows), min(c1, cols)
    if r1 <= r0 or c1 <= c0:
        return None
    return r0, r1, c0, c1


def add_volume_delta(drr: DRR, delta_hu, seed: int | None = None, base_hu=None,
                     device: str | torch.device | None = "cpu") -> DRR:
    """Add a small 3-D HU change (e.g. an inserted nodule: new HU - old HU) to a rendered DRR.

    ``delta_hu`` is a :class:`Volume` on its own (small) grid in the same LPS frame, zero where nothing changes.
    Because HU -> material is nonlinear, the change in basis materials is basis(base + delta) - basis(base), with
    the base HU taken from ``base_hu`` (same grid as ``delta_hu``) or else sampled from the CT the DRR was
    rendered from (``drr.source``); if neither is available the base is taken as 0 HU (soft tissue / water).
    Only rays in the projected bounding box of ``delta_hu`` are traced (through the small grid only), and the
    physics (Beer-Lambert, noise drawn with ``seed``, log, window) is re-applied inside that box; pixels outside
    the box are returned unchanged. Returns a new DRR (the input is not modified).
    """
    t0 = time.perf_counter()
    _check_volume_values(delta_hu.array)
    box = projected_box(drr.geometry, delta_hu)
    out = replace(drr, image=drr.image.copy(), line_integral=drr.line_integral.copy(),
                  basis=None if drr.basis is None else drr.basis.copy(),
                  log_image=None if drr.log_image is None else drr.log_image.copy(), meta=dict(drr.meta),
                  timings=dict(drr.timings))
    if box is None:
        return out
    r0, r1, c0, c1 = box
    phys = drr.physics
    if base_hu is not None:
        base = np.asarray(base_hu.array if hasattr(base_hu, "array") else base_hu, dtype=np.float32)
        if base.shape != delta_hu.array.shape:
            raise InputError(f"base_hu has shape {base.shape} but delta_hu has {delta_hu.array.shape}; "
                             "give the original HU on the same grid as the delta.")
    elif drr.source is not None:
        base = _sample_base_hu(drr.source, delta_hu)
    else:
        base = np.zeros(delta_hu.array.shape, dtype=np.float32)
    dev = _device(device)
    base_t = torch.from_numpy(np.ascontiguousarray(base)).to(dev)
    new_t = base_t + torch.from_numpy(np.ascontiguousarray(delta_hu.array, dtype=np.float32)).to(dev)
    w0, b0 = hu_to_basis(base_t, phys.hu_bone)
    w1, b1 = hu_to_basis(new_t, phys.hu_bone)
    keep_basis = drr.basis is not None
    if keep_basis:
        vol = torch.stack([w1 - w0, b1 - b0])  # (2, Z, Y, X)
    else:
        mw, mb = phys.basis_mu(phys.mean_energy_kev)
        vol = ((w1 - w0) * float(mw[0]) + (b1 - b0) * float(mb[0]))[None]
    src = PlaneSource(vol.shape[1:], vol.shape[0], dev, tensor=vol)
    d = project_tensor(src, delta_hu.index_to_world_matrix, drr.geometry, (r0, r1, c0, c1)).cpu().numpy()
    _check_projection(d, delta_hu.array)
    if keep_basis:
        out.basis[:, r0:r1, c0:c1] += d  # type: ignore[index]
        mw, mb = phys.basis_mu(phys.mean_energy_kev)
        out.line_integral[r0:r1, c0:c1] = (out.basis[0, r0:r1, c0:c1] * float(mw[0])  # type: ignore[index]
                                           + out.basis[1, r0:r1, c0:c1] * float(mb[0]))  # type: ignore[index]
        basis_box = out.basis[:, r0:r1, c0:c1]  # type: ignore[index]
    else:
        out.line_integral[r0:r1, c0:c1] += d[0]
        basis_box = None
    if drr.acquisition is not None and drr.acquisition.active and drr.primary is not None:
        # scatter, blur and processing are not local: update the primary in the box and re-run the whole chain
        # (same seed -> same noise outside the nodule's reach; processing keeps the base render's value range)
        from dxr_core.drr.acquisition import apply_acquisition

        out.primary = drr.primary.copy()
        out.primary[r0:r1, c0:c1] = primary_transmission(phys, out.line_integral[r0:r1, c0:c1], basis_box)
        vr = (drr.acquisition_record or {}).get("processing", {}).get("value_range_log")
        res = apply_acquisition(drr.acquisition, phys, drr.geometry, out.primary, seed,
                                tuple(vr) if vr is not None else None)
        out.image, out.log_image, out.scatter, out.spr = res["image"], res["log_image"], res["scatter"], res["spr"]
        out.acquisition_record = res["record"]
    else:
        img, log_img = apply_physics(phys, out.line_integral[r0:r1, c0:c1], basis_box, seed)
        out.image[r0:r1, c0:c1] = img
        if out.log_image is not None:
            out.log_image[r0:r1, c0:c1] = log_img
    out.meta.setdefault("volume_deltas", [])
    out.meta["volume_deltas"] = list(out.meta["volume_deltas"]) + [{"pixel_box": [r0, r1, c0, c1], "seed": seed}]
    out.timings["last_delta_s"] = time.perf_counter() - t0
    return out
