"""Optional native CPU kernels for the Joseph projector (OpenMP C, compiled on first use, loaded with ctypes).

Why hand-written: no installed library offers a fast CPU cone-beam Joseph projector; torch's ``grid_sample`` does
the same arithmetic but materialises a grid per (plane, ray) sample and is ~10x slower on CPU. The kernels below
do exactly what the torch path in :mod:`dxr_core.drr.projector` does (bilinear in-plane interpolation, zero
outside the grid, per-ray sum over planes), so results agree to float rounding (tested). If no C compiler is
available, or ``DXR_NO_CKERNEL=1``, the torch path is used instead.

The separable kernel converts each source row once per block of output rows and skips, exactly, source rows
(and column ranges) whose converted values are all 0 (air at <= -1000 HU after the HU -> material clamp, zero
padding): the sum is unchanged. With air clipping on (renders: ``Physics.air_hu``, default -950 HU) the voxels of
a row outside its body span (first .. last voxel above the threshold) count as 0, which lets noisy air around the
patient be skipped too (see ``joseph_separable`` below). The same conversion flags NaN/inf voxels it reads.

Build: the system ``cc`` (``FLAGS``: ``-O3 -march=native -fopenmp`` + tuning, no ``-ffast-math``) compiles into a
per-user cache (``$DXR_CACHE_DIR/kernels``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``/diffusionxray/kernels``),
file name keyed by a hash of the source, flags, compiler path and CPU; it is built in a private temporary directory
and renamed into place atomically, under an exclusive file lock so concurrent first uses (pytest workers, a server
and a CLI) build it once. If ``cc`` is missing or the build fails, one RuntimeWarning is issued and the torch path is
used.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

_SRC = r"""
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* Voxel transfer applied to every tap before interpolation (so it equals converting the volume first):
   mode 0: identity (Cin channels out); mode 1: HU -> (water fraction, bone fraction) (2 out);
   mode 2: HU -> mu = mw * w + mb * b (1 out). hb = 1 / (HU of cortical bone), as in physics.hu_to_basis. */
static inline float hu_w(float h, float hb) {
    float a = 1.0f + h * 1e-3f, b = 1.0f - h * hb;
    float r = h <= 0.0f ? a : b;
    return r > 0.0f ? r : 0.0f;
}
static inline uint32_t fbits(float v) { uint32_t b; memcpy(&b, &v, 4); return b; }
static inline float hu_b(float h, float hb) { float r = h * hb; return r > 0.0f ? r : 0.0f; }

/* Separable case (detector rows/columns parallel to two index axes, rays crossing planes of the third).
   vol: float32, element (plane k, channel c, rowtap, coltap) at k*s_k + c*s_c + rowtap*s_r + coltap*s_u (any
   strides: no transposed copy is needed). For plane j (0..K-1, plane index kmin+j), output row r and column u:
   row taps iv0/iv1 with weights wv0/wv1 ((K, h) arrays), column taps iu0/iu1 with weights wu0/wu1 ((K, w));
   out-of-grid taps have weight 0 and a clamped valid index; taps are monotone in r and in u.
   Bilinear interpolation is separable, so it is done as: (1) convert each *source row* (plane j, row tap v) that
   some output row needs once (voxel transfer, contiguous and vectorised when s_u == 1) and resample it at the
   pixel columns (2-tap gather from an L1-resident line) -> T_v (w values); (2) every output row r adds
   wv0 * T_iv0 + wv1 * T_iv1 (contiguous, vectorised). Output rows are processed in blocks (one thread per block,
   planes innermost), so each source row is converted ~once per block and the block's accumulators stay in cache.
   Exact empty-space skipping: a converted row whose values are all exactly 0 (e.g. air at <= -1000 HU after the
   HU -> material clamp) is skipped, and only the pixel columns whose taps reach its non-zero extent are resampled
   and accumulated (others would add exact zeros). Without air clipping results equal the unskipped sum.
   Air clipping (air_on, threshold `air` in source units, HU for renders): in each source row, voxels outside the
   span [first, last voxel above air] are air outside the patient and count as exactly 0; voxels inside the span
   keep their values (lung, even emphysematous lung or a trachea below the threshold, is kept). Why: real CT air
   is noisy (e.g. -1000 +- 10 HU); the HU -> material clamp at -1000 HU keeps the positive half of that noise and
   drops the negative half, so the air around the patient adds a purely clamp-induced positive bias (tens of cm
   of "air" at ~ +4 HU mean for sigma 10 HU) and, because almost no converted value is exactly 0, defeats the
   skipping above. Clipping removes that bias and makes the air rows/columns skippable again. Tools that
   integrate the volume as given (plastimatch's exact/Siddon projector with --hu-conversion none) include it.
   nonfinite (may be NULL): set to 1 if any converted (i.e. read) part of a source row holds a NaN or +-inf --
   the HU clamp would silently turn those into 0 -- else 0.
   out: (Cout, h, w) float32, overwritten; multiplied by step (h, w) (mm per plane step) when step != NULL. */

static int first_inc_ge(const int32_t* a, int n, int v) { int lo = 0, hi = n; while (lo < hi) { int m = (lo + hi) >> 1; if (a[m] >= v) hi = m; else lo = m + 1; } return lo; }
static int first_inc_gt(const int32_t* a, int n, int v) { int lo = 0, hi = n; while (lo < hi) { int m = (lo + hi) >> 1; if (a[m] > v) hi = m; else lo = m + 1; } return lo; }
static int first_dec_le(const int32_t* a, int n, int v) { int lo = 0, hi = n; while (lo < hi) { int m = (lo + hi) >> 1; if (a[m] <= v) hi = m; else lo = m + 1; } return lo; }
static int first_dec_lt(const int32_t* a, int n, int v) { int lo = 0, hi = n; while (lo < hi) { int m = (lo + hi) >> 1; if (a[m] < v) hi = m; else lo = m + 1; } return lo; }

/* T[u] = q0[u] * L[p0[u]] + q1[u] * L[p1[u]] for u in [u0, u1] (p0, p1 monotone). With AVX-512, 16 outputs at a
   time whose taps lie within a window of 32 consecutive line values (any pitch up to ~2 source values per pixel)
   are read with two loads and two in-register permutes instead of a memory gather (L must have 32 readable
   floats past its last used index). Other chunks, and other CPUs, take the plain loop. */
static void resample_line(const float* L, const int32_t* p0, const int32_t* p1, const float* q0, const float* q1,
                          float* T, int u0, int u1)
{
    int u = u0;
#ifdef __AVX512F__
    for (; u + 15 <= u1; u += 16) {
        const int a = p0[u] < p0[u + 15] ? p0[u] : p0[u + 15];
        const int b = p1[u] > p1[u + 15] ? p1[u] : p1[u + 15];
        if (b - a >= 32) {
            for (int k = u; k < u + 16; ++k) T[k] = q0[k] * L[p0[k]] + q1[k] * L[p1[k]];
            continue;
        }
        const __m512i base = _mm512_set1_epi32(a);
        const __m512 lo = _mm512_loadu_ps(L + a), hi = _mm512_loadu_ps(L + a + 16);
        const __m512 v0 = _mm512_permutex2var_ps(lo, _mm512_sub_epi32(_mm512_loadu_si512((const void*)(p0 + u)), base), hi);
        const __m512 v1 = _mm512_permutex2var_ps(lo, _mm512_sub_epi32(_mm512_loadu_si512((const void*)(p1 + u)), base), hi);
        _mm512_storeu_ps(T + u, _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(q0 + u), v0), _mm512_mul_ps(_mm512_loadu_ps(q1 + u), v1)));
    }
#endif
    for (; u <= u1; ++u) T[u] = q0[u] * L[p0[u]] + q1[u] * L[p1[u]];
}

/* 1 if any channel of element x of the source row is "not air": !(v <= air), so NaN counts as not air */
static inline int above_air(const float* src, int64_t s_c, int64_t s_u, int Cin, int x, float air)
{
    for (int c = 0; c < Cin; ++c) if (!(src[c * s_c + (int64_t)x * s_u] <= air)) return 1;
    return 0;
}

/* convert source row (channels at src + c*s_c, element x at x*s_u) for x in [xlo, xhi] into line[c*n_u + x];
   returns 1 if any value is non-zero and sets [*xf, *xl] to the first/last non-zero x; sets *bad = 1 if a value
   in [xlo, xhi] is NaN or +-inf (exponent bits all ones: an integer test, valid under any FP flags).
   Air clipping (air_on): the source values (HU for modes 1/2, any channel for mode 0) are compared with `air`
   while converting (running first/last index "above air", no extra pass); the body span of the row is
   [F, L] = first/last x in the *whole* row (0..n_u-1) with a value above air. Only [xlo, xhi] is converted, so
   when the span found inside it does not reach its ends the row is scanned outwards (early exit; nothing to scan
   when the taps cover the whole row) to tell whether the body continues beyond [xlo, xhi]. Values outside
   [F, L] are treated as exactly 0: excluded from [*xf, *xl], and the line value just outside each end of the
   span is zeroed (resample_line reads at most one value beyond [*xf, *xl]). Rows with no value above air
   anywhere are skipped (return 0). See joseph_separable for why. */
static int convert_row(const float* src, int64_t s_c, int64_t s_u, int Cin, int Cout, int mode, float mw, float mb,
                       float hb, int n_u, int xlo, int xhi, int air_on, float air, float* line, int* xf, int* xl,
                       int* bad)
{
    /* "any non-zero" as an OR of the value bits (sign masked) and "any non-finite" as an OR of exponent tests:
       integer reductions; first/last above air as int min/max reductions, so the loops vectorise */
    /* first above air as a max of (BIG - x): gcc 12 vectorises index-max reductions but not index-min ones */
    uint32_t m = 0, nf = 0;
    int fb = -1, la = -1;
#define DXR_AIR(V) { const int k_ = !((V) <= air); const int c0_ = k_ ? 0x3fffffff - x : -1, c1_ = k_ ? x : -1; \
                     fb = c0_ > fb ? c0_ : fb; la = c1_ > la ? c1_ : la; }
#define DXR_NF(V) nf |= (uint32_t)((fbits(V) & 0x7f800000u) == 0x7f800000u)
    if (mode == 0) {
        for (int c = 0; c < Cin; ++c) {
            const float* s = src + c * s_c;
            float* t = line + (int64_t)c * n_u;
            if (s_u == 1) {
                for (int x = xlo; x <= xhi; ++x) { const float v = s[x]; t[x] = v; m |= fbits(v) & 0x7fffffffu; DXR_NF(v); DXR_AIR(v); }
            } else {
                for (int x = xlo; x <= xhi; ++x) { const float v = s[(int64_t)x * s_u]; t[x] = v; m |= fbits(v) & 0x7fffffffu; DXR_NF(v); DXR_AIR(v); }
            }
        }
    } else if (mode == 1) {
        float* t0 = line;
        float* t1 = line + n_u;
        if (s_u == 1) {
            for (int x = xlo; x <= xhi; ++x) { const float hh = src[x]; const float a = hu_w(hh, hb), b = hu_b(hh, hb); t0[x] = a; t1[x] = b; m |= (fbits(a) | fbits(b)) & 0x7fffffffu; DXR_NF(hh); DXR_AIR(hh); }
        } else {
            for (int x = xlo; x <= xhi; ++x) { const float hh = src[(int64_t)x * s_u]; const float a = hu_w(hh, hb), b = hu_b(hh, hb); t0[x] = a; t1[x] = b; m |= (fbits(a) | fbits(b)) & 0x7fffffffu; DXR_NF(hh); DXR_AIR(hh); }
        }
    } else {
        float* t0 = line;
        if (s_u == 1) {
            for (int x = xlo; x <= xhi; ++x) { const float hh = src[x]; const float v = mw * hu_w(hh, hb) + mb * hu_b(hh, hb); t0[x] = v; m |= fbits(v) & 0x7fffffffu; DXR_NF(hh); DXR_AIR(hh); }
        } else {
            for (int x = xlo; x <= xhi; ++x) { const float hh = src[(int64_t)x * s_u]; const float v = mw * hu_w(hh, hb) + mb * hu_b(hh, hb); t0[x] = v; m |= fbits(v) & 0x7fffffffu; DXR_NF(hh); DXR_AIR(hh); }
        }
    }
#undef DXR_AIR
#undef DXR_NF
    if (nf) *bad = 1;
    const int fa = 0x3fffffff - fb;  /* valid when la >= 0 */
    int a = xlo, b = xhi;
    if (air_on) {
        if (la >= 0) {  /* the body span meets [xlo, xhi] at [fa, la], extended to an end if the body goes on */
            a = fa; b = la;
            if (a > xlo) for (int x = xlo - 1; x >= 0; --x) if (above_air(src, s_c, s_u, Cin, x, air)) { a = xlo; break; }
            if (b < xhi) for (int x = xhi + 1; x < n_u; ++x) if (above_air(src, s_c, s_u, Cin, x, air)) { b = xhi; break; }
        } else {        /* all air in [xlo, xhi]: inside the body only if the body lies on both sides */
            int left = 0, right = 0;
            for (int x = xlo - 1; x >= 0 && !left; --x) left = above_air(src, s_c, s_u, Cin, x, air);
            if (left) for (int x = xhi + 1; x < n_u && !right; ++x) right = above_air(src, s_c, s_u, Cin, x, air);
            if (!(left && right)) return 0;
        }
        for (int c = 0; c < Cout; ++c) {
            if (a > xlo) line[(int64_t)c * n_u + a - 1] = 0.0f;
            if (b < xhi) line[(int64_t)c * n_u + b + 1] = 0.0f;
        }
    }
    if (m == 0) return 0;
    for (;; ++a) {
        if (a > b) return 0;
        int nz = 0; for (int c = 0; c < Cout; ++c) nz |= line[(int64_t)c * n_u + a] != 0.0f; if (nz) break;
    }
    for (;; --b) { int nz = 0; for (int c = 0; c < Cout; ++c) nz |= line[(int64_t)c * n_u + b] != 0.0f; if (nz) break; }
    *xf = a; *xl = b;
    return 1;
}

void joseph_separable(const float* vol, int64_t s_k, int64_t s_c, int64_t s_r, int64_t s_u,
                      int Cin, int mode, float mw, float mb, float hb, int n_u,
                      int K, int kmin, int h, int w,
                      const int32_t* iv0, const int32_t* iv1, const float* wv0, const float* wv1,
                      const int32_t* iu0, const int32_t* iu1, const float* wu0, const float* wu1,
                      const float* step, float* out, int nthreads, int rows_per_block,
                      int air_on, float air, int* nonfinite)
{
    int any_bad = 0;
    const int Cout = mode == 1 ? 2 : (mode == 2 ? 1 : Cin);
    const int RB = rows_per_block > 0 ? rows_per_block : 16;
    const int nblk = (h + RB - 1) / RB;
    #pragma omp parallel num_threads(nthreads)
    {
        float* line = (float*)calloc((size_t)n_u * (size_t)Cout + 32, sizeof(float));  /* +32: resample_line */
        int cap = 0;
        float* T = NULL;       /* slot s: Cout rows of w at T + s*Cout*w */
        int* stamp = NULL;     /* slot s computed for plane stamp[s] - 1 */
        int* ua = NULL;        /* non-zero column range of slot s: [ua, ub]; ua > ub: all zero */
        int* ub = NULL;
        int bad = 0;           /* a non-finite value in a converted (i.e. read) part of a source row */
        #pragma omp for schedule(dynamic, 1)
        for (int bi = 0; bi < nblk; ++bi) {
            const int rb = bi * RB, re = rb + RB < h ? rb + RB : h;
            for (int c = 0; c < Cout; ++c)
                for (int r = rb; r < re; ++r) { float* o = out + ((int64_t)c * h + r) * w; for (int u = 0; u < w; ++u) o[u] = 0.0f; }
            for (int j = 0; j < K; ++j) {
                const int32_t* v0 = iv0 + (int64_t)j * h;
                const int32_t* v1 = iv1 + (int64_t)j * h;
                const float* a0s = wv0 + (int64_t)j * h;
                const float* a1s = wv1 + (int64_t)j * h;
                int vlo = 0x7fffffff, vhi = -1;
                for (int r = rb; r < re; ++r) {
                    if (a0s[r] != 0.0f) { vlo = v0[r] < vlo ? v0[r] : vlo; vhi = v0[r] > vhi ? v0[r] : vhi; }
                    if (a1s[r] != 0.0f) { vlo = v1[r] < vlo ? v1[r] : vlo; vhi = v1[r] > vhi ? v1[r] : vhi; }
                }
                if (vhi < vlo) continue;  /* no output row of this block samples plane j inside the grid */
                const int ns = vhi - vlo + 1;
                if (ns > cap) {
                    cap = ns;
                    free(T); free(stamp); free(ua); free(ub);
                    T = (float*)malloc(sizeof(float) * (size_t)cap * Cout * w);
                    stamp = (int*)calloc((size_t)cap, sizeof(int));
                    ua = (int*)malloc(sizeof(int) * (size_t)cap);
                    ub = (int*)malloc(sizeof(int) * (size_t)cap);
                } else {
                    for (int s = 0; s < ns; ++s) stamp[s] = 0;
                }
                const int32_t* pu0 = iu0 + (int64_t)j * w;
                const int32_t* pu1 = iu1 + (int64_t)j * w;
                const float* qu0 = wu0 + (int64_t)j * w;
                const float* qu1 = wu1 + (int64_t)j * w;
                const int inc = pu0[w - 1] >= pu0[0];
                const int xlo = inc ? pu0[0] : pu0[w - 1];
                const int xhi = inc ? pu1[w - 1] : pu1[0];
                const float* base = vol + (int64_t)(kmin + j) * s_k;
                for (int r = rb; r < re; ++r) {
                    for (int tap = 0; tap < 2; ++tap) {
                        const float a = tap ? a1s[r] : a0s[r];
                        if (a == 0.0f) continue;
                        const int s = (tap ? v1[r] : v0[r]) - vlo;
                        if (stamp[s]) continue;
                        stamp[s] = 1;
                        int xf, xl;
                        if (!convert_row(base + (int64_t)(s + vlo) * s_r, s_c, s_u, Cin, Cout, mode, mw, mb, hb, n_u,
                                         xlo, xhi, air_on, air, line, &xf, &xl, &bad)) { ua[s] = 1; ub[s] = 0; continue; }
                        int u0, u1;
                        if (inc) { u0 = first_inc_ge(pu1, w, xf); u1 = first_inc_gt(pu0, w, xl) - 1; }
                        else { u0 = first_dec_le(pu0, w, xl); u1 = first_dec_lt(pu1, w, xf) - 1; }
                        ua[s] = u0; ub[s] = u1;
                        for (int c = 0; c < Cout; ++c) {
                            float* Tc = T + ((int64_t)s * Cout + c) * w;
                            const float* L = line + (int64_t)c * n_u;
                            for (int u = 0; u < u0; ++u) Tc[u] = 0.0f;
                            resample_line(L, pu0, pu1, qu0, qu1, Tc, u0, u1);
                            for (int u = (u1 + 1 > u0 ? u1 + 1 : u0); u < w; ++u) Tc[u] = 0.0f;
                        }
                    }
                }
                for (int r = rb; r < re; ++r) {
                    float a0 = a0s[r], a1 = a1s[r];
                    const int s0 = v0[r] - vlo, s1 = v1[r] - vlo;
                    if (a0 != 0.0f && ua[s0] > ub[s0]) a0 = 0.0f;
                    if (a1 != 0.0f && ua[s1] > ub[s1]) a1 = 0.0f;
                    if (a0 == 0.0f && a1 == 0.0f) continue;
                    int lo, hi;
                    if (a0 != 0.0f && a1 != 0.0f) {
                        lo = ua[s0] < ua[s1] ? ua[s0] : ua[s1];
                        hi = ub[s0] > ub[s1] ? ub[s0] : ub[s1];
                        for (int c = 0; c < Cout; ++c) {
                            float* o = out + ((int64_t)c * h + r) * w;
                            const float* T0 = T + ((int64_t)s0 * Cout + c) * w;
                            const float* T1 = T + ((int64_t)s1 * Cout + c) * w;
                            for (int u = lo; u <= hi; ++u) o[u] += a0 * T0[u] + a1 * T1[u];
                        }
                    } else {
                        const int s = a0 != 0.0f ? s0 : s1;
                        const float a = a0 != 0.0f ? a0 : a1;
                        lo = ua[s]; hi = ub[s];
                        for (int c = 0; c < Cout; ++c) {
                            float* o = out + ((int64_t)c * h + r) * w;
                            const float* T0 = T + ((int64_t)s * Cout + c) * w;
                            for (int u = lo; u <= hi; ++u) o[u] += a * T0[u];
                        }
                    }
                }
            }
            if (step != NULL)
                for (int c = 0; c < Cout; ++c)
                    for (int r = rb; r < re; ++r) {
                        float* o = out + ((int64_t)c * h + r) * w;
                        const float* st = step + (int64_t)r * w;
                        for (int u = 0; u < w; ++u) o[u] *= st[u];
                    }
        }
        free(line); free(T); free(stamp); free(ua); free(ub);
        if (bad) {
            #pragma omp atomic write
            any_bad = 1;
        }
    }
    if (nonfinite != NULL) *nonfinite = any_bad;
}

/* Bilinear taps of the separable case along one axis: for plane j and pixel u, q = s + alpha[j] * (p[u] - s)
   (index units); taps floor(q) and floor(q) + 1 clamped to [0, nmax - 1], weights 1 - f and f (f = q - floor q,
   float32), 0 for a tap outside the grid. Outputs (K, n) row-major. Same arithmetic as the torch/numpy set-up. */
void joseph_taps(const double* alpha, int K, const double* p, int n, double s, int nmax,
                 int32_t* i0, int32_t* i1, float* w0, float* w1, int nthreads)
{
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int j = 0; j < K; ++j) {
        const double al = alpha[j];
        for (int u = 0; u < n; ++u) {
            const double q = s + al * (p[u] - s);
            double t = floor(q);
            const float f = (float)(q - t);
            if (t < -2.0) t = -2.0;
            if (t > nmax + 1.0) t = nmax + 1.0;
            const int t0 = (int)t, t1 = t0 + 1;
            const int64_t o = (int64_t)j * n + u;
            w0[o] = (t0 >= 0 && t0 < nmax) ? 1.0f - f : 0.0f;
            w1[o] = (t1 >= 0 && t1 < nmax) ? f : 0.0f;
            i0[o] = t0 < 0 ? 0 : (t0 > nmax - 1 ? nmax - 1 : t0);
            i1[o] = t1 < 0 ? 0 : (t1 > nmax - 1 ? nmax - 1 : t1);
        }
    }
}

/* 1 if any of the n float32 values is NaN or +-inf (exponent bits all ones), else 0; integer test so it holds
   under any floating-point flags. Parallel and vectorised (memory-bound). */
int any_nonfinite(const float* a, int64_t n, int nthreads)
{
    const uint32_t* b = (const uint32_t*)a;
    int bad = 0;
    #pragma omp parallel for reduction(|:bad) schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < n; ++i) bad |= (b[i] & 0x7f800000u) == 0x7f800000u;
    return bad;
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
# no -ffast-math: keep IEEE semantics. 512-bit vectors (gcc defaults to 256 even on AVX-512 CPUs) and unrolling made the
# 512^2 PA render of bench/drr_speed.py 14 % faster here (47 -> 41 ms) with bit-identical output; other CPUs ignore them.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-funroll-loops", "-fopenmp", "-shared", "-fPIC")


def _cpu_tag() -> str:
    try:
        txt = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in txt.splitlines() if line.startswith("flags")), "")
        model = next((line for line in txt.splitlines() if line.startswith("model name")), "")
    except OSError:
        flags = model = ""
    return model + flags


def cache_dir() -> Path:
    """Per-user kernel cache: ``$DXR_CACHE_DIR/kernels``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` /diffusionxray/kernels."""
    root = os.environ.get("DXR_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".cache"
        root = str(base / "diffusionxray")
    return Path(root) / "kernels"


def _warn(msg: str) -> None:
    # warn_explicit with a pseudo file name: printed as exactly one line (no source line), still filterable
    warnings.warn_explicit(f"{msg}; using the slower torch projector (set DXR_NO_CKERNEL=1 to use it silently).",
                           RuntimeWarning, filename="dxr_core.drr._ckernel", lineno=0, module="dxr_core.drr._ckernel")


def _compile(cc: str, so: Path) -> None:
    """Build ``so`` atomically: compile into a private temporary directory next to it, then ``os.replace``.

    Concurrency: an exclusive ``flock`` on ``<so>.lock`` makes a second process (pytest workers, a server and a
    CLI starting together) wait for the first build and reuse it; without ``fcntl`` both build and the atomic
    rename makes the last one win harmlessly (a process that already loaded the old file keeps its mapping)."""
    so.parent.mkdir(parents=True, exist_ok=True)
    lock_f = None
    try:
        import fcntl

        lock_f = open(so.with_suffix(".lock"), "a+")
        fcntl.flock(lock_f.fileno(), fcntl.LOCK_EX)
    except (ImportError, OSError):
        lock_f = None
    try:
        if so.exists():  # built by another process while we waited
            return
        with tempfile.TemporaryDirectory(dir=so.parent, prefix=".build-") as tmp:
            src = Path(tmp) / "joseph.c"
            src.write_text(_SRC)
            tmp_so = Path(tmp) / so.name
            subprocess.run([cc, *FLAGS, str(src), "-o", str(tmp_so), "-lm"], check=True, capture_output=True, timeout=300)
            os.replace(tmp_so, so)  # atomic on POSIX
    finally:
        if lock_f is not None:
            lock_f.close()  # releases the lock


def load():
    """The ctypes library, or None when it cannot be built here (then the torch path is used, with one warning)."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    if os.environ.get("DXR_NO_CKERNEL"):
        return None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        _warn("no C compiler (cc/gcc) on PATH, so the native projector kernel cannot be built")
        return None
    key = hashlib.sha256("\0".join([_SRC, " ".join(FLAGS), cc, platform.machine(), _cpu_tag()]).encode()).hexdigest()[:16]
    so = cache_dir() / f"joseph_{key}.so"
    try:
        if not so.exists():
            _compile(cc, so)
        lib = ctypes.CDLL(str(so))
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        _warn(f"building the native projector kernel with {cc} failed ({err[0] if err else 'exit ' + str(e.returncode)})")
        return None
    except (OSError, subprocess.SubprocessError) as e:
        _warn(f"the native projector kernel could not be built or loaded from {so.parent} ({e})")
        return None
    f32 = ctypes.POINTER(ctypes.c_float)
    i32 = ctypes.POINTER(ctypes.c_int32)
    f64 = ctypes.POINTER(ctypes.c_double)
    i64 = ctypes.c_int64
    ci = ctypes.c_int
    cf = ctypes.c_float
    lib.joseph_separable.argtypes = [f32, i64, i64, i64, i64, ci, ci, cf, cf, cf, ci, ci, ci, ci, ci,
                                     i32, i32, f32, f32, i32, i32, f32, f32, f32, f32, ci, ci, ci, cf,
                                     ctypes.POINTER(ctypes.c_int)]
    lib.joseph_separable.restype = None
    lib.joseph_general.argtypes = [f32, ci, ci, ci, ci, ci, f64, f64, f64, f64, i32, i32, f32, ci]
    lib.joseph_general.restype = None
    lib.joseph_taps.argtypes = [f64, ci, f64, ci, ctypes.c_double, ci, i32, i32, f32, f32, ci]
    lib.joseph_taps.restype = None
    lib.any_nonfinite.argtypes = [f32, i64, ci]
    lib.any_nonfinite.restype = ci
    _LIB = lib
    return lib


def ptr(a: np.ndarray, kind):
    return a.ctypes.data_as(ctypes.POINTER(kind))
