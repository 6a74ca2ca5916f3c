"""Cone-beam forward projector (line integrals), Joseph's method, vectorised in torch (CPU or CUDA).

Algorithm (Joseph 1982, "An improved algorithm for reprojecting rays through pixel images"):

* Work in *continuous voxel-index space*: the source and every pixel centre are mapped through the volume's
  world->index affine (``Volume.world_to_index``), so oblique direction matrices and anisotropic spacing are
  exact (a straight line stays a straight line under an affine map).
* Each ray is assigned the index axis ``a`` along which it advances fastest (|d_a| maximal). It is sampled once
  on every voxel plane ``a = 0, 1, ..., N_a - 1``; on each plane the two other coordinates are linear in the plane
  number, and the volume is interpolated *bilinearly within the plane*
  (``torch.nn.functional.grid_sample``, zero padding = air outside the grid). The sum is multiplied by the
  physical length of one plane step along that ray, ``|A d| / |d_a|`` mm (A = direction @ diag(spacing)).
* Planes are processed in chunks (a batch of planes is a batch of 2-D images for ``grid_sample``), rays in
  chunks, so memory stays bounded for any detector size.
* Fast path: when the detector rows/columns are parallel to two index axes and the rays advance along the third
  (PA/AP/lateral of an axis-aligned CT — the common case), bilinear interpolation is separable; each plane is
  then interpolated along one axis with a gather and along the other as a sparse (2 taps/row) matrix product,
  which is several times faster than ``grid_sample`` and gives the same numbers (to float rounding).
* A ray segment is clipped to [source, pixel] only when the source or the detector is inside the grid's box.

Only the ray bookkeeping here is hand-written (no library offers a cone-beam Joseph projector for torch);
interpolation is torch's ``grid_sample`` / ``gather`` / sparse matmul.
"""
from __future__ import annotations

import ctypes
import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dxr_core.drr import _ckernel
from dxr_core.errors import GeometryError, InputError

__all__ = ["project", "project_tensor", "PlaneSource", "set_threads"]

_THREADS_SET = False
# how many (plane, ray) samples one grid_sample call handles: bounds the temporary grid memory
_SAMPLES_PER_CALL = 1 << 21


def set_threads() -> int:
    """Use every CPU this process may run on (once); returns the thread count."""
    global _THREADS_SET
    if not _THREADS_SET:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            n = os.cpu_count() or 1
        if torch.get_num_threads() < n:
            torch.set_num_threads(n)
        _THREADS_SET = True
    return torch.get_num_threads()


# permutation of a (C, Z, Y, X) tensor that puts index axis a (0=i/x, 1=j/y, 2=k/z) first, the channel second,
# and the two remaining index axes as (H, W); plus which index axes H and W are.
_LAYOUT = {
    0: ((3, 0, 1, 2), 2, 1),  # planes along x: (X, C, Z, Y), H = k (z), W = j (y)
    1: ((2, 0, 1, 3), 2, 0),  # planes along y: (Y, C, Z, X), H = k (z), W = i (x)
    2: ((1, 0, 2, 3), 1, 0),  # planes along z: (Z, C, Y, X), H = j (y), W = i (x)
}


class PlaneSource:
    """A channels-first volume (C, Z, Y, X) that hands out contiguous plane stacks (N_a, C, H, W) per axis.

    ``make`` (optional) builds the plane stack for an axis directly (e.g. HU -> basis materials written straight
    into the permuted layout, so the full-size volume is never held twice); it is called as
    ``make(axis, along_w)`` and, when ``air`` is set, clips air outside the body along the stack's W axis
    (``along_w``) or H axis. Stacks are cached per (axis, along_w).

    ``air`` (optional): air-clipping threshold in the units of ``raw`` (HU for renders, see
    ``Physics.air_hu``): along each volume row parallel to the detector rows (the plane stack's column axis),
    values outside [first, last value above ``air``] count as 0. The native kernel applies it to ``raw``;
    ``make`` must apply it to the stacks it builds. None: no clipping.
    """

    def __init__(self, shape_zyx: Sequence[int], channels: int, device: torch.device,
                 tensor: torch.Tensor | None = None,
                 make: Callable[[int], torch.Tensor] | None = None,
                 raw: np.ndarray | None = None, transfer: tuple[int, float, float, float] = (0, 0.0, 0.0, 1.0),
                 air: float | None = None) -> None:
        self.shape_zyx = tuple(int(s) for s in shape_zyx)
        self.channels = int(channels)
        self.device = torch.device(device)
        self._tensor = tensor
        self._make = make
        self._cache: dict[int, torch.Tensor] = {}
        # native-kernel shortcut (CPU): the unpermuted (Cin, Z, Y, X) float32 array plus a voxel transfer
        # (mode 0 identity, 1 HU->basis, 2 HU->mu; params mw, mb, hu_bone), converted on the fly per tap.
        self.raw = raw
        self.transfer = transfer
        self.air = None if air is None else float(air)
        if raw is None and tensor is not None and tensor.device.type == "cpu":
            self.raw = tensor.contiguous().numpy()

    @classmethod
    def from_array(cls, array: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> "PlaneSource":
        t = torch.as_tensor(array)
        if t.ndim == 3:
            t = t[None]
        t = t.to(device=device, dtype=torch.float32)
        return cls(t.shape[1:], t.shape[0], t.device, tensor=t)

    def planes(self, axis: int, along_w: bool = True) -> torch.Tensor:
        """(N_a, C, H, W) stack; ``along_w``: the axis air clipping runs along (W, else H; see ``air``)."""
        key = (axis, bool(along_w) if self._make is not None else True)
        if key not in self._cache:
            if self._make is not None:
                stack = self._make(axis, bool(along_w))
            else:
                if self.air is not None:
                    raise ValueError("PlaneSource: air clipping needs a `make` that applies it")
                perm = _LAYOUT[axis][0]
                stack = self._tensor.permute(*perm).contiguous()  # type: ignore[union-attr]
            if self._make is not None:  # built on demand: keep one layout at a time to bound memory
                self._cache.clear()
            self._cache[key] = stack
        return self._cache[key]


NONFINITE_MESSAGE = ("The CT volume contains NaN or infinite voxels; fill them (e.g. with -1000 HU for air) "
                     "or fix the conversion that produced them.")
# volumes up to this many voxels get the full NaN/inf pre-check (a few ms); larger ones are checked where rays
# read them: the native kernel flags non-finite values in the rows it converts, the torch path checks the blocks
# it converts, and every projection's output is checked (_check_projection)
_PRECHECK_MAX_VOXELS = 1 << 22


def _check_volume_values(array, full: bool | None = None) -> None:
    """Empty volume -> InputError. NaN/inf voxels -> InputError, checked here for small volumes (or ``full``);
    for large ones the projection checks what its rays read (see ``_PRECHECK_MAX_VOXELS``)."""
    a = torch.as_tensor(array)
    if a.numel() == 0:
        raise InputError("The CT volume is empty (a dimension has size 0); give a non-empty volume.")
    if full is None:
        full = a.numel() <= _PRECHECK_MAX_VOXELS
    if full:
        _check_finite(a)


def _check_finite(a: torch.Tensor) -> None:
    arr = a.numpy() if a.device.type == "cpu" else None
    lib = _ckernel.load() if arr is not None and arr.dtype == np.float32 and arr.flags.c_contiguous else None
    if lib is not None:  # one parallel pass, integer test of the exponent bits
        finite = not lib.any_nonfinite(_ckernel.ptr(arr, ctypes.c_float), arr.size,
                                       set_threads() if arr.size >= (1 << 22) else 1)
    else:
        # fast check: a NaN/inf anywhere makes the sum non-finite (a full check confirms, e.g. after overflow)
        finite = bool(np.isfinite(arr.sum())) if arr is not None else bool(torch.isfinite(a.sum()))
        if not finite and bool(torch.isfinite(a).all()):
            finite = True
    if not finite:
        raise InputError(NONFINITE_MESSAGE)


def _check_projection(out, volume_array) -> None:
    """A NaN/inf voxel that any ray reads makes that pixel non-finite: then raise the NaN/inf InputError (after a
    full check of the volume, on this error path only, so a float32 overflow of finite values is not reported as
    NaN voxels). NaN voxels that no ray reads do not matter."""
    o = out.numpy() if isinstance(out, torch.Tensor) and out.device.type == "cpu" else out
    ok = bool(np.isfinite(o).all()) if isinstance(o, np.ndarray) else bool(torch.isfinite(o).all())
    if not ok:
        _check_finite(torch.as_tensor(volume_array))


def _ray_setup(index_to_world: np.ndarray, geometry, pixel_box):
    """Source and pixel centres in index space, per-ray direction, box bookkeeping (float64 numpy)."""
    rows, cols = geometry.size
    if pixel_box is None:
        r0, r1, c0, c1 = 0, rows, 0, cols
    else:
        r0, r1, c0, c1 = (int(v) for v in pixel_box)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, rows), min(c1, cols)
        if r1 <= r0 or c1 <= c0:
            raise GeometryError(f"pixel_box {tuple(pixel_box)} selects no pixel of the {rows}x{cols} detector; "
                                "give (r0, r1, c0, c1) half-open inside the detector.")
    m = np.asarray(index_to_world, dtype=np.float64)
    minv = np.linalg.inv(m)
    a_inv = minv[:3, :3]
    s_idx = minv[:3, :3] @ geometry.source_lps + minv[:3, 3]
    d0 = minv[:3, :3] @ geometry.detector_origin_lps + minv[:3, 3]
    du = a_inv @ (geometry.row_direction * geometry.pixel_spacing_mm[1])  # per column step, index space
    dv = a_inv @ (geometry.col_direction * geometry.pixel_spacing_mm[0])  # per row step
    return (r0, r1, c0, c1), s_idx, d0, du, dv, m[:3, :3]


def project_tensor(source: PlaneSource, index_to_world: np.ndarray, geometry, pixel_box=None) -> torch.Tensor:
    """Line integrals (value x mm) of every channel of ``source`` for the pixels in ``pixel_box``.

    Returns a float32 tensor (C, h, w) on ``source.device`` (h, w = box size or full detector).
    """
    set_threads()
    (r0, r1, c0, c1), s_idx, d0, du, dv, amat = _ray_setup(index_to_world, geometry, pixel_box)
    h, w = r1 - r0, c1 - c0
    nz, ny, nx = source.shape_zyx
    n_axis = (nx, ny, nz)
    dev = source.device
    C = source.channels

    # --- can the separable fast path be used? (detector axes || index axes, rays advance along the third) ----
    fast = _separable_axes(du, dv, s_idx, d0)
    if fast is not None:
        return _project_separable(source, fast, s_idx, d0, du, dv, amat, (r0, r1, c0, c1), n_axis)

    # per-ray index-space direction d = p - s (float64 for set-up, float32 on the device for the heavy part)
    cc = np.arange(c0, c1, dtype=np.float64)
    rr = np.arange(r0, r1, dtype=np.float64)
    p = d0[None, None, :] + rr[:, None, None] * dv[None, None, :] + cc[None, :, None] * du[None, None, :]
    d = (p - s_idx[None, None, :]).reshape(-1, 3)
    dom = np.argmax(np.abs(d), axis=1)
    step_mm = np.linalg.norm(d @ amat.T, axis=1) / np.abs(d[np.arange(len(d)), dom])
    out = torch.zeros((C, h * w), dtype=torch.float32, device=dev)

    for axis in (0, 1, 2):
        sel = np.nonzero(dom == axis)[0]
        if sel.size == 0:
            continue
        perm, h_ax, w_ax = _LAYOUT[axis]
        planes = source.planes(axis)  # (N_a, C, H, W)
        n_a, _, H, W = planes.shape
        da = d[sel, axis]
        # coordinate along W / H axis at plane k: q(k) = s_q + (k - s_a) * d_q / d_a  (index units)
        mw = d[sel, w_ax] / da
        mh = d[sel, h_ax] / da
        bw = s_idx[w_ax] - s_idx[axis] * mw
        bh = s_idx[h_ax] - s_idx[axis] * mh
        # normalised grid_sample coordinates (align_corners=False): g = (2 q + 1) / size - 1
        gmw, gbw = 2.0 * mw / W, (2.0 * bw + 1.0) / W - 1.0
        gmh, gbh = 2.0 * mh / H, (2.0 * bh + 1.0) / H - 1.0
        # segment clipping [source, pixel]: t = (k - s_a)/d_a in [0, 1]
        k_lo = np.minimum(s_idx[axis], s_idx[axis] + da)
        k_hi = np.maximum(s_idx[axis], s_idx[axis] + da)
        need_clip = bool(np.any(k_lo > -1.0) or np.any(k_hi < n_a))
        lib = _ckernel.load() if dev.type == "cpu" else None
        if lib is not None:
            # per-ray plane range: inside [source, pixel] and where the in-plane point is within (-1, size)
            lo = np.maximum(np.ceil(k_lo - 1e-9), 0.0)
            hi = np.minimum(np.floor(k_hi + 1e-9), n_a - 1.0)
            for bq, mq, nq in ((bw, mw, W), (bh, mh, H)):
                with np.errstate(divide="ignore", invalid="ignore"):
                    ka = (-1.0 - bq) / mq
                    kb = (nq - bq) / mq
                kl = np.where(mq > 0, ka, np.where(mq < 0, kb, -np.inf))
                kh = np.where(mq > 0, kb, np.where(mq < 0, ka, np.inf))
                miss = (mq == 0) & ((bq <= -1.0) | (bq >= nq))
                lo = np.maximum(lo, np.floor(kl))
                hi = np.minimum(hi, np.ceil(kh))
                hi = np.where(miss, -1.0, hi)
            lo = np.clip(lo, 0, n_a).astype(np.int32)
            hi = np.clip(hi, -1, n_a - 1).astype(np.int32)
            pl = planes.contiguous().numpy()
            res = np.zeros((C, sel.size), dtype=np.float32)
            f64 = [np.ascontiguousarray(x, dtype=np.float64) for x in (bw, mw, bh, mh)]
            lib.joseph_general(_ckernel.ptr(pl, ctypes.c_float), C, n_a, H, W, sel.size,
                               *(_ckernel.ptr(x, ctypes.c_double) for x in f64),
                               _ckernel.ptr(lo, ctypes.c_int32), _ckernel.ptr(hi, ctypes.c_int32),
                               _ckernel.ptr(res, ctypes.c_float), set_threads())
            res *= step_mm[sel].astype(np.float32)[None]
            out[:, torch.as_tensor(sel)] = torch.from_numpy(res)
            continue
        gb = torch.as_tensor(np.stack([gbw, gbh], -1), dtype=torch.float32, device=dev)
        gm = torch.as_tensor(np.stack([gmw, gmh], -1), dtype=torch.float32, device=dev)
        klo_t = torch.as_tensor(k_lo, dtype=torch.float32, device=dev)
        khi_t = torch.as_tensor(k_hi, dtype=torch.float32, device=dev)
        acc = torch.zeros((C, sel.size), dtype=torch.float32, device=dev)
        n_rays = sel.size
        ray_chunk = min(n_rays, max(1, _SAMPLES_PER_CALL // 4))
        for q0 in range(0, n_rays, ray_chunk):
            q1 = min(n_rays, q0 + ray_chunk)
            nk = max(1, _SAMPLES_PER_CALL // (q1 - q0))
            gbq, gmq = gb[q0:q1], gm[q0:q1]
            for k0 in range(0, n_a, nk):
                k1 = min(n_a, k0 + nk)
                ks = torch.arange(k0, k1, dtype=torch.float32, device=dev)
                grid = gbq[None] + ks[:, None, None] * gmq[None]  # (nk, R, 2)
                vals = F.grid_sample(planes[k0:k1], grid[:, None], mode="bilinear", padding_mode="zeros",
                                     align_corners=False)[:, :, 0, :]  # (nk, C, R)
                if need_clip:
                    inside = (ks[:, None] >= klo_t[None, q0:q1]) & (ks[:, None] <= khi_t[None, q0:q1])
                    vals = vals * inside[:, None, :]
                acc[:, q0:q1] += vals.sum(0)
        acc *= torch.as_tensor(step_mm[sel], dtype=torch.float32, device=dev)[None]
        out[:, torch.as_tensor(sel, device=dev)] = acc
    return out.reshape(C, h, w)


def _separable_axes(du, dv, s_idx, d0, tol: float = 1e-9):
    """If du (per-column step) and dv (per-row step) are each parallel to one index axis and the detector plane is
    perpendicular to the third, return (plane_axis, col_axis, row_axis); else None."""
    nu, nv = np.abs(du), np.abs(dv)
    cu, cv = int(np.argmax(nu)), int(np.argmax(nv))
    if cu == cv:
        return None
    if np.any(np.delete(nu, cu) > tol * nu[cu]) or np.any(np.delete(nv, cv) > tol * nv[cv]):
        return None
    a = 3 - cu - cv
    return a, cu, cv


def _project_separable(source: PlaneSource, axes, s_idx, d0, du, dv, amat, box, n_axis) -> torch.Tensor:
    """Joseph's method when pixel columns move along index axis ``cu``, rows along ``cv``, rays cross planes of
    axis ``a``: on plane k the sampled coordinates are q_u(k, c) (depends on the column only) and q_v(k, r) (row
    only), so bilinear = (gather + lerp along the W/H axis of the column) then a 2-tap sparse matrix along rows."""
    a, cu, cv = axes
    r0, r1, c0, c1 = box
    h, w = r1 - r0, c1 - c0
    dev = source.device
    C = source.channels
    perm, h_ax, w_ax = _LAYOUT[a]
    nz, ny, nx = source.shape_zyx
    n_a = (nx, ny, nz)[a]
    H, W = (nz, nz, ny)[a], (ny, nx, nx)[a]
    lib0 = _ckernel.load() if dev.type == "cpu" else None
    # air clipping runs along the pixel-column axis cu (the native kernel's source rows): W or H of the stack
    planes = None if (lib0 is not None and source.raw is not None) else source.planes(a, along_w=(cu == w_ax))
    # p(c, r)_a is constant (detector parallel to the planes); rays: q(k) = s_q + (k - s_a)/(p_a - s_a) (p_q - s_q)
    pa = d0[a]
    denom = pa - s_idx[a]
    if abs(denom) < 1e-12:
        raise GeometryError("The detector plane passes through the source; check SID.")
    cc = np.arange(c0, c1, dtype=np.float64)
    rr = np.arange(r0, r1, dtype=np.float64)
    pu = d0[cu] + cc * du[cu]  # column coordinate (index axis cu) of each pixel column
    pv = d0[cv] + rr * dv[cv]  # row coordinate (index axis cv)
    k_lo, k_hi = min(s_idx[a], pa), max(s_idx[a], pa)
    kmin = max(0, int(np.ceil(k_lo - 1e-9)))
    kmax = min(n_a - 1, int(np.floor(k_hi + 1e-9)))
    # step length per ray (mm per plane): |A d| / |d_a|, d = p - s; |A d|^2 = d^T G d with G = A^T A, and d has a
    # constant a-component, a column-only cu-component and a row-only cv-component (no (h, w, 3) temporaries)
    G = amat.T @ amat
    xu = (pu - s_idx[cu])[None, :]
    xv = (pv - s_idx[cv])[:, None]
    q = (G[a, a] * denom * denom + G[cu, cu] * xu * xu + G[cv, cv] * xv * xv
         + 2.0 * (G[a, cu] * denom * xu + G[a, cv] * denom * xv) + (2.0 * G[cu, cv]) * xv * xu)
    step_np = (np.sqrt(q) * (1.0 / abs(denom))).astype(np.float32)
    if kmax < kmin:
        return torch.zeros((C, h, w), dtype=torch.float32, device=dev)
    lib = _ckernel.load() if dev.type == "cpu" else None
    if lib is not None:
        return _separable_native(lib, source, planes, a, cu, cv, w_ax, H, W, C, h, w, kmin, kmax, s_idx, denom,
                                 pu, pv, step_np)
    step_mm = torch.as_tensor(step_np, device=dev)
    out = torch.zeros((C, h, w), dtype=torch.float32, device=dev)
    # which layout axis is the pixel-column axis: W or H of the plane stack
    col_is_w = (cu == w_ax)
    n_col_ax = W if col_is_w else H
    n_row_ax = H if col_is_w else W
    ks = torch.arange(kmin, kmax + 1, dtype=torch.float64, device=dev)
    alpha = (ks - s_idx[a]) / denom  # (K,)
    qu = s_idx[cu] + alpha[:, None] * (torch.as_tensor(pu, device=dev) - s_idx[cu])[None, :]  # (K, w)
    qv = s_idx[cv] + alpha[:, None] * (torch.as_tensor(pv, device=dev) - s_idx[cv])[None, :]  # (K, h)
    # zero-padded planes: index shift by +1, so taps at -1 and N read zeros
    u0f = torch.floor(qu).clamp(-1, n_col_ax - 1)
    fu = (qu - u0f).clamp(0, 1).to(torch.float32)
    iu = (u0f + 1).to(torch.int64)  # in padded coordinates, taps iu and iu + 1
    v0f = torch.floor(qv).clamp(-1, n_row_ax - 1)
    fv = (qv - v0f).clamp(0, 1).to(torch.float32)
    iv = (v0f + 1).to(torch.int64)
    K = len(ks)
    # memory per chunk ~ nk * C * n_row_ax * w floats
    nk = max(1, min(K, (1 << 22) // max(1, C * (n_row_ax + 2) * w)))
    for j0 in range(0, K, nk):
        j1 = min(K, j0 + nk)
        n = j1 - j0
        blk = planes[kmin + j0:kmin + j1]  # (n, C, H, W)
        if not col_is_w:
            blk = blk.transpose(2, 3)  # (n, C, W, H): last axis = column axis
        blk = F.pad(blk, (1, 1, 1, 1))  # (n, C, R+2, U+2)
        idx = iu[j0:j1][:, None, None, :].expand(n, C, blk.shape[2], w)
        t = torch.gather(blk, 3, idx)
        t1 = torch.gather(blk, 3, idx + 1)
        t = torch.lerp(t, t1, fu[j0:j1][:, None, None, :])  # (n, C, R+2, w)
        # along rows: out[r] += (1 - fv) t[iv] + fv t[iv + 1]
        jv = iv[j0:j1][:, None, :, None].expand(n, C, h, w)
        g0 = torch.gather(t, 2, jv)
        g1 = torch.gather(t, 2, jv + 1)
        out += torch.lerp(g0, g1, fv[j0:j1][:, None, :, None]).sum(0)
    out *= step_mm[None]
    return out


def _separable_native(lib, source, planes, a, cu, cv, w_ax, H, W, C, h, w, kmin, kmax, s_idx, denom, pu, pv, step_np):
    """The separable case on the native C kernel (all set-up in float64 numpy; reads the volume in place)."""
    nz, ny, nx = source.shape_zyx
    col_is_w = (cu == w_ax)
    n_col_ax = (nx, ny, nz)[cu]
    n_row_ax = (nx, ny, nz)[cv]
    ks = np.arange(kmin, kmax + 1, dtype=np.float64)
    K = len(ks)
    alpha = (ks - s_idx[a]) / denom
    nthreads = set_threads() if (h + w) * K >= (1 << 18) else 1

    def taps(p, s, n):  # bilinear taps along one axis for every plane: (K, len(p)) indices and weights
        p = np.ascontiguousarray(p, dtype=np.float64)
        out = (np.empty((K, len(p)), np.int32), np.empty((K, len(p)), np.int32),
               np.empty((K, len(p)), np.float32), np.empty((K, len(p)), np.float32))
        lib.joseph_taps(_ckernel.ptr(alpha, ctypes.c_double), K, _ckernel.ptr(p, ctypes.c_double), len(p),
                        float(s), int(n),
                        *(_ckernel.ptr(x, ctypes.c_int32 if x.dtype == np.int32 else ctypes.c_float) for x in out),
                        nthreads)
        return out

    alpha = np.ascontiguousarray(alpha, dtype=np.float64)
    iv0, iv1, wv0, wv1 = taps(pv, s_idx[cv], n_row_ax)
    iu0, iu1, wu0, wu1 = taps(pu, s_idx[cu], n_col_ax)
    if source.raw is not None:  # natural (Cin, Z, Y, X) layout, any strides: no copy
        pl = source.raw
        cin = pl.shape[0]
        strides_idx = (1, nx, nx * ny)  # elements per i, j, k step
        s_k, s_c = strides_idx[a], nx * ny * nz
        s_r, s_u = strides_idx[cv], strides_idx[cu]
        mode, tmw, tmb, thb = source.transfer
        air = source.air
    else:
        pl = planes.contiguous().numpy()
        cin = C
        s_k, s_c = C * H * W, H * W
        s_r, s_u = (W, 1) if col_is_w else (1, W)
        mode, tmw, tmb, thb = 0, 0.0, 0.0, 1.0
        air = None  # the stack was built (and clipped) by source.planes
    res = np.empty((C, h, w), dtype=np.float32)  # every element is written by the kernel
    step_c = np.ascontiguousarray(step_np, dtype=np.float32)
    # small jobs (a nodule's box): one thread; waking a pool costs more than it saves, most of all on a busy machine
    nthreads = set_threads() if h * w * K >= (1 << 20) else 1
    # output-row blocks: big enough to reuse each converted source row, small enough for >= 4 blocks per thread
    rows_per_block = int(max(1, min(16, h // (4 * nthreads))))
    P = _ckernel.ptr
    bad = ctypes.c_int(0)
    lib.joseph_separable(P(pl, ctypes.c_float), s_k, s_c, s_r, s_u, cin, int(mode), float(tmw), float(tmb),
                         float(1.0 / thb), int(n_col_ax), K, kmin, h, w,
                         P(iv0, ctypes.c_int32), P(iv1, ctypes.c_int32), P(wv0, ctypes.c_float), P(wv1, ctypes.c_float),
                         P(iu0, ctypes.c_int32), P(iu1, ctypes.c_int32), P(wu0, ctypes.c_float), P(wu1, ctypes.c_float),
                         P(step_c, ctypes.c_float), P(res, ctypes.c_float), nthreads, rows_per_block,
                         int(air is not None), float(air if air is not None else 0.0), ctypes.byref(bad))
    if bad.value:  # a NaN/inf voxel in a row the rays read (the HU clamp would have turned it into 0)
        raise InputError(NONFINITE_MESSAGE)
    return torch.from_numpy(res)


def project(volume, geometry, pixel_box=None, device: str | torch.device = "cpu") -> np.ndarray:
    """Line integrals of ``volume.array`` (value x mm) along every ray of ``geometry``.

    ``pixel_box`` = (r0, r1, c0, c1), half-open, restricts the computation (and the result) to those pixels.
    Returns float32 numpy (rows, cols), or the box. The values are integrated as given (no air clipping: they
    need not be HU; :func:`dxr_core.drr.render_drr` clips air, see ``Physics.air_hu``).
    """
    _check_volume_values(volume.array)
    src = PlaneSource.from_array(np.ascontiguousarray(volume.array, dtype=np.float32), device=device)
    img = project_tensor(src, volume.index_to_world_matrix, geometry, pixel_box)[0].cpu().numpy()
    _check_projection(img, volume.array)
    return img
