"""Optional native CPU kernels for the Joseph projector (OpenMP C, compiled on first use, loaded with ctypes).

Why hand-written: no installed library offers a fast CPU cone-beam Joseph projector; torch's ``grid_sample`` does
the same arithmetic but materialises a grid per (plane, ray) sample and is ~10x slower on CPU. The kernels below
do exactly what the torch path in :mod:`dxr_core.drr.projector` does (bilinear in-plane interpolation, zero
outside the grid, per-ray sum over planes), so results agree to float rounding (tested). If no C compiler is
available, or ``DXR_NO_CKERNEL=1``, the torch path is used instead.

The shared object is built with the system ``cc`` (``-O3 -fopenmp``) into ``$DXR_CACHE_DIR`` (default
``~/.cache/diffusionxray/kernels``), keyed by a hash of the source, compiler flags and CPU, and written atomically.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

_SRC = r"""
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>

/* Voxel transfer applied to every tap before interpolation (so it equals converting the volume first):
   mode 0: identity (Cin channels out); mode 1: HU -> (water fraction, bone fraction) (2 out);
   mode 2: HU -> mu = mw * w + mb * b (1 out). hb = HU of cortical bone. */
static inline float hu_w(float h, float hb) {
    float a = 1.0f + h * 1e-3f, b = 1.0f - h / hb;
    float r = h <= 0.0f ? a : b;
    return r > 0.0f ? r : 0.0f;
}
static inline float hu_b(float h, float hb) { float r = h / hb; return r > 0.0f ? r : 0.0f; }

/* Separable case. vol: float32, element (plane k, channel c, rowtap, coltap) at
   k*s_k + c*s_c + rowtap*s_r + coltap*s_u (any strides: no transposed copy is needed). For plane j (0..K-1, plane
   index kmin+j) and output row r / column u: taps iv0/iv1 (rows) with weights wv0/wv1, iu0/iu1 (cols) with
   weights wu0/wu1 (out-of-grid taps have weight 0 and a clamped valid index). Per (row, plane): blend the two
   source rows over the needed column range (contiguous, vectorised), then resample that line at the pixel
   columns (L1-resident gathers). out: (Cout, h, w) float32, accumulated. */
void joseph_separable(const float* vol, int64_t s_k, int64_t s_c, int64_t s_r, int64_t s_u,
                      int Cin, int mode, float mw, float mb, float hb, int n_u,
                      int K, int kmin, int h, int w,
                      const int32_t* iv0, const int32_t* iv1, const float* wv0, const float* wv1,
                      const int32_t* iu0, const int32_t* iu1, const float* wu0, const float* wu1,
                      float* out, int nthreads)
{
    const int Cout = mode == 1 ? 2 : (mode == 2 ? 1 : Cin);
    #pragma omp parallel num_threads(nthreads)
    {
        float* tmp = (float*)malloc(sizeof(float) * (size_t)n_u * (size_t)(Cout > 0 ? Cout : 1));
        #pragma omp for schedule(dynamic, 2)
        for (int r = 0; r < h; ++r) {
            for (int j = 0; j < K; ++j) {
                const float a0 = wv0[(int64_t)j * h + r], a1 = wv1[(int64_t)j * h + r];
                if (a0 == 0.0f && a1 == 0.0f) continue;
                const int32_t* pu0 = iu0 + (int64_t)j * w;
                const int32_t* pu1 = iu1 + (int64_t)j * w;
                const float* qu0 = wu0 + (int64_t)j * w;
                const float* qu1 = wu1 + (int64_t)j * w;
                int xlo = pu0[0] < pu0[w - 1] ? pu0[0] : pu0[w - 1];
                int xhi = pu1[0] > pu1[w - 1] ? pu1[0] : pu1[w - 1];
                const float* base = vol + (int64_t)(kmin + j) * s_k;
                const int64_t o0 = (int64_t)iv0[(int64_t)j * h + r] * s_r;
                const int64_t o1 = (int64_t)iv1[(int64_t)j * h + r] * s_r;
                if (mode == 0) {
                    for (int c = 0; c < Cin; ++c) {
                        const float* row0 = base + c * s_c + o0;
                        const float* row1 = base + c * s_c + o1;
                        float* t = tmp + (int64_t)c * n_u;
                        if (s_u == 1) { for (int x = xlo; x <= xhi; ++x) t[x] = a0 * row0[x] + a1 * row1[x]; }
                        else { for (int x = xlo; x <= xhi; ++x) t[x] = a0 * row0[x * s_u] + a1 * row1[x * s_u]; }
                    }
                } else {
                    const float* row0 = base + o0;
                    const float* row1 = base + o1;
                    float* t0 = tmp;
                    float* t1 = tmp + n_u;
                    for (int x = xlo; x <= xhi; ++x) {
                        const float h0 = row0[(int64_t)x * s_u], h1 = row1[(int64_t)x * s_u];
                        const float w_ = a0 * hu_w(h0, hb) + a1 * hu_w(h1, hb);
                        const float b_ = a0 * hu_b(h0, hb) + a1 * hu_b(h1, hb);
                        if (mode == 1) { t0[x] = w_; t1[x] = b_; }
                        else { t0[x] = mw * w_ + mb * b_; }
                    }
                }
                for (int c = 0; c < Cout; ++c) {
                    float* acc = out + ((int64_t)c * h + r) * w;
                    const float* t = tmp + (int64_t)c * n_u;
                    for (int u = 0; u < w; ++u) acc[u] += qu0[u] * t[pu0[u]] + qu1[u] * t[pu1[u]];
                }
            }
        }
        free(tmp);
    }
}

/* General case. planes: (N, C, H, W) contiguous float32. Ray q samples planes k in [k0[q], k1[q]] at
   (W-coord, H-coord) = (bw[q] + k*mw[q], bh[q] + k*mh[q]) (index units, voxel centres at integers), bilinear,
   zero outside the grid; out[c*R + q] = sum (not yet multiplied by the step length). */
void joseph_general(const float* planes, int C, int N, int H, int W, int R,
                    const double* bw, const double* mw, const double* bh, const double* mh,
                    const int32_t* k0, const int32_t* k1, float* out, int nthreads)
{
    const int64_t plane = (int64_t)H * W;
    #pragma omp parallel for schedule(dynamic, 64) num_threads(nthreads)
    for (int q = 0; q < R; ++q) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int k = k0[q]; k <= k1[q]; ++k) {
            const double u = bw[q] + k * mw[q];
            const double v = bh[q] + k * mh[q];
            if (u <= -1.0 || v <= -1.0 || u >= W || v >= H) continue;
            const int x0 = (int)(u + 1.0) - 1, y0 = (int)(v + 1.0) - 1;  /* floor for u > -1 */
            const float fx = (float)(u - x0), fy = (float)(v - y0);
            const float w00 = (1 - fx) * (1 - fy), w01 = fx * (1 - fy), w10 = (1 - fx) * fy, w11 = fx * fy;
            const int okx0 = x0 >= 0, okx1 = x0 + 1 < W, oky0 = y0 >= 0, oky1 = y0 + 1 < H;
            for (int c = 0; c < C && c < 8; ++c) {
                const float* p = planes + ((int64_t)k * C + c) * plane;
                float s = 0.0f;
                if (oky0) {
                    const float* rw = p + (int64_t)y0 * W;
                    if (okx0) s += w00 * rw[x0];
                    if (okx1) s += w01 * rw[x0 + 1];
                }
                if (oky1) {
                    const float* rw = p + (int64_t)(y0 + 1) * W;
                    if (okx0) s += w10 * rw[x0];
                    if (okx1) s += w11 * rw[x0 + 1];
                }
                acc[c] += s;
            }
        }
        for (int c = 0; c < C && c < 8; ++c) out[(int64_t)c * R + q] = acc[c];
    }
}
"""

_LIB = None
_TRIED = False


def _cpu_tag() -> str:
    try:
        txt = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in txt.splitlines() if line.startswith("flags")), "")
        model = next((line for line in txt.splitlines() if line.startswith("model name")), "")
    except OSError:
        flags = model = ""
    return model + flags


def load():
    """The ctypes library, or None when it cannot be built here (then the torch path is used)."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    if os.environ.get("DXR_NO_CKERNEL"):
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256((_SRC + " ".join(flags) + platform.machine() + _cpu_tag()).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("DXR_CACHE_DIR", Path.home() / ".cache" / "diffusionxray")) / "kernels"
    so = cache / f"joseph_{key}.so"
    try:
        if not so.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "joseph.c"
                src.write_text(_SRC)
                tmp_so = Path(tmp) / so.name
                subprocess.run([cc, *flags, str(src), "-o", str(tmp_so)], check=True, capture_output=True, timeout=120)
                os.replace(tmp_so, so)  # atomic
        lib = ctypes.CDLL(str(so))
    except (OSError, subprocess.SubprocessError):
        return None
    f32 = ctypes.POINTER(ctypes.c_float)
    i32 = ctypes.POINTER(ctypes.c_int32)
    f64 = ctypes.POINTER(ctypes.c_double)
    i64 = ctypes.c_int64
    ci = ctypes.c_int
    lib.joseph_separable.argtypes = [f32, i64, i64, i64, i64, ci, ci, ctypes.c_float, ctypes.c_float, ctypes.c_float, ci, ci, ci, ci, ci, i32, i32, f32, f32, i32, i32, f32, f32, f32, ci]
    lib.joseph_separable.restype = None
    lib.joseph_general.argtypes = [f32, ci, ci, ci, ci, ci, f64, f64, f64, f64, i32, i32, f32, ci]
    lib.joseph_general.restype = None
    _LIB = lib
    return lib


def ptr(a: np.ndarray, kind):
    return a.ctypes.data_as(ctypes.POINTER(kind))
