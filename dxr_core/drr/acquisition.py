"""Acquisition realism after projection: scatter, anti-scatter grid, flat-panel detector, radiograph processing.

Every step is switchable and recorded in the DRR sidecar (``"acquisition"``); with every step off (the default,
``Acquisition()`` or ``None``) :func:`dxr_core.drr.render.render_drr` takes exactly today's path (bit for bit).
The chain, applied to the noise-free *primary* transmission P = I_p/I_0 of :func:`render_drr` (poly or mono):

1. **Scatter** (:class:`ScatterModel`): scatter-kernel superposition (SKS) in the form of Sun & Star-Lack 2010
   ("Improved scatter correction using adaptive scatter kernel superposition", Phys Med Biol 55:6695; after
   Ohnesorge et al. 1999, Eur Radiol 9:563, and the scatter point-spread model of Boone & Seibert 1988,
   Med Phys 15:721): every pixel emits scatter in proportion to its primary and to a power of its attenuation,
   q(x) = c * P(x)^(1 + alpha) * tau(x)^beta with tau = -ln P (their amplitude factor c (I/I0)^alpha
   (ln I0/I)^beta times the primary), and the scatter at the detector is S = q (*) K with a normalised
   two-Gaussian kernel K (widths in mm at the detector). For a wide uniform slab SPR = c P^alpha tau^beta.
   c, alpha, beta and the kernel are calibrated on the chest phantom (seed 0) at 120 kVp (preset filtration,
   no grid) so that the scatter-to-primary ratio (SPR) is ~1.0 behind the lungs and ~4.2 behind the mediastinum,
   inside the published no-grid ranges (lungs ~0.5-1.5, mediastinum ~2-5: Floyd et al. 1991, "Scatter
   compensation in digital chest radiography using the posterior beam stop technique", Med Phys 18:408 (and
   Floyd, Lo, Ravin 1992 for PA chest); Chan & Doi 1985, "Radiation dose in diagnostic radiology: Monte Carlo
   simulation studies", Med Phys 11:480 / "Physical characteristics of scattered radiation in diagnostic
   radiology: Monte Carlo simulation studies", Med Phys 12:152). The convolution runs on a coarse grid
   (``coarse_mm``, 4 mm) because scatter has no fine detail; cost is a few ms at 512^2.
2. **Anti-scatter grid** (:class:`AntiScatterGrid`): primary and scatter transmissions Tp, Ts by grid ratio
   (linear interpolation in a table of values typical of focused Al/fibre-interspaced grids at ~120 kVp,
   36-40 lines/cm; Chan, Higashida & Doi 1985, Med Phys 12:449; Fetterly & Schueler 2007, Phys Med Biol
   52:4863). Detected signal = Tp P + Ts S; the flat field (no patient) is Tp, so I/I0 = P + (Ts/Tp) S.
3. **Detector** (:class:`DetectorModel`): indirect CsI:Tl flat panel. Optional focal-spot blur of the primary
   (Gaussian, FWHM = focal spot x (M - 1) at the detector, M = SID/SAD); quantum noise Poisson(N) with N the
   absorbed quanta per pixel at a clinical dose (air kerma at the detector x photons per uGy of the spectrum
   from spekpy x pixel area x CsI absorption from xraydb); the light-spread MTF L(f) = 1 / (1 + (f/fc)^n)
   times the pixel aperture sinc, applied to signal and quantum noise (indirect conversion blurs both);
   additive Gaussian electronic noise. L is fitted to the published presampled MTF of a 0.6 mm structured CsI
   panel with 0.127 mm pixels, 0.2 at 2.5 mm^-1 and 0.1 at 3.8 mm^-1 (Samei 2003, "Image quality in two
   phosphor-based flat panel digital radiographic detectors", Med Phys 30:1747).
4. **Processing** (:class:`Processing`): ``raw`` = today's fixed log window ``physics.window``; ``default`` =
   a documented chain in the style of multiscale radiograph processing (MUSICA, Vuylsteke & Schoeters 1994,
   Proc SPIE 2167:551; Prokop, Neitzel & Schaefer-Prokop 2003, "Principles of image processing in digital chest
   radiography", J Thorac Imaging 18:148): log image -> automatic range from percentiles (exposure recognition)
   -> Laplacian pyramid (Burt & Adelson 1983) with a non-linear gain per band, c' = g_k a sign(c) |c/a|^p
   (p < 1 lifts faint detail more than strong edges) and a reduced low-pass band (dynamic range compression)
   -> S-shaped tone curve (film-like LUT) -> [0, 1], bone bright.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

from dxr_core.errors import OptionError

__all__ = ["ScatterModel", "AntiScatterGrid", "DetectorModel", "Processing", "Acquisition", "apply_acquisition",
           "mtf_light_spread", "grid_transmissions", "SAMEI_2003_CSI_MTF", "GRID_TABLE",
           "chest_region_masks", "spr_by_region", "off_record"]


def _check_range(name: str, v: float, lo: float, hi: float, hint: str) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise OptionError(f"{name} {v!r} is not a number; {hint}.") from None
    if not (np.isfinite(v) and lo <= v <= hi):
        raise OptionError(f"{name} {v} is outside {lo:g}..{hi:g}; {hint}.")
    return v


# ---------------------------------------------------------------------------------------------------------------
# 1. scatter
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ScatterModel:
    """Scatter-kernel superposition: S = (c P tau^beta) (*) K, K = w1 G(sigma1) + (1 - w1) G(sigma2) (sum 1)."""

    enabled: bool = False
    amplitude: float = 0.28  # c
    exponent: float = 0.0  # beta (on tau = -ln P)
    primary_exponent: float = -0.5  # alpha (on P); SPR of a wide uniform slab = c P^alpha tau^beta
    sigma1_mm: float = 8.0  # narrow Gaussian (mm at the detector)
    sigma2_mm: float = 50.0  # broad Gaussian
    weight1: float = 0.55  # weight of the narrow Gaussian
    coarse_mm: float = 4.0  # grid the convolution runs on

    def __post_init__(self) -> None:
        self.enabled = bool(self.enabled)
        self.amplitude = _check_range("scatter amplitude", self.amplitude, 0.0, 20.0, "give e.g. 0.6")
        self.exponent = _check_range("scatter exponent", self.exponent, 0.0, 4.0, "give e.g. 1.0")
        self.primary_exponent = _check_range("scatter primary_exponent", self.primary_exponent, -1.0, 1.0,
                                             "give e.g. -0.5")
        self.sigma1_mm = _check_range("scatter sigma1_mm", self.sigma1_mm, 0.5, 1000.0, "give e.g. 20 mm")
        self.sigma2_mm = _check_range("scatter sigma2_mm", self.sigma2_mm, 0.5, 1000.0, "give e.g. 80 mm")
        self.weight1 = _check_range("scatter weight1", self.weight1, 0.0, 1.0, "give a weight in 0..1")
        self.coarse_mm = _check_range("scatter coarse_mm", self.coarse_mm, 0.1, 50.0, "give e.g. 4 mm")

    def scatter(self, primary: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        """Scatter fluence (units of the unattenuated primary, no grid) for a primary transmission map."""
        import scipy.fft as sfft
        import torch
        import torch.nn.functional as F

        p = np.clip(np.asarray(primary, dtype=np.float32), 1e-12, 1.0)
        tau = -np.log(p)
        q = (self.amplitude * p ** (1.0 + self.primary_exponent) * tau ** self.exponent).astype(np.float32)
        rows, cols = q.shape
        kr = max(1, int(round(self.coarse_mm / pixel_spacing_mm[0])))
        kc = max(1, int(round(self.coarse_mm / pixel_spacing_mm[1])))
        qt = torch.from_numpy(q)[None, None]
        pr, pc = (-rows) % kr, (-cols) % kc
        if pr or pc:
            qt = F.pad(qt, (0, pc, 0, pr), mode="replicate")
        qc = F.avg_pool2d(qt, (kr, kc))[0, 0].numpy().astype(np.float64)
        dr, dc = pixel_spacing_mm[0] * kr, pixel_spacing_mm[1] * kc  # coarse pixel (mm)
        h, w = qc.shape
        pad_r = int(np.ceil(3.5 * self.sigma2_mm / dr))
        pad_c = int(np.ceil(3.5 * self.sigma2_mm / dc))
        nr, nc = sfft.next_fast_len(h + pad_r), sfft.next_fast_len(w + pad_c)
        fr = np.fft.fftfreq(nr, d=dr)[:, None]
        fc = np.fft.rfftfreq(nc, d=dc)[None, :]
        f2 = fr ** 2 + fc ** 2
        # Fourier transform of a unit-area Gaussian: exp(-2 pi^2 sigma^2 f^2); zero padding = no scatter from
        # outside the detector field (linear, not circular, convolution within pad)
        kern = self.weight1 * np.exp(-2 * np.pi ** 2 * self.sigma1_mm ** 2 * f2) + \
            (1 - self.weight1) * np.exp(-2 * np.pi ** 2 * self.sigma2_mm ** 2 * f2)
        sc = sfft.irfft2(sfft.rfft2(qc, s=(nr, nc), workers=-1) * kern, s=(nr, nc), workers=-1)[:h, :w]
        st = torch.from_numpy(np.ascontiguousarray(sc, dtype=np.float32))[None, None]
        up = F.interpolate(st, size=(h * kr, w * kc), mode="bilinear", align_corners=False)[0, 0, :rows, :cols]
        return np.maximum(up.numpy(), 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# 2. anti-scatter grid
# ---------------------------------------------------------------------------------------------------------------
# grid ratio -> (primary transmission Tp, scatter transmission Ts): values typical of focused grids with
# ~36-40 lines/cm at ~120 kVp (Chan, Higashida & Doi 1985, Med Phys 12:449; Fetterly & Schueler 2007,
# Phys Med Biol 52:4863, fibre-interspaced grids r = 6..15). No grid: (1, 1).
GRID_TABLE = ((0.0, 1.0, 1.0), (5.0, 0.78, 0.24), (8.0, 0.74, 0.15), (10.0, 0.72, 0.11), (12.0, 0.71, 0.09),
              (15.0, 0.69, 0.07), (16.0, 0.68, 0.065))


def grid_transmissions(ratio: float) -> tuple[float, float]:
    """(Tp, Ts) of an anti-scatter grid of ``ratio`` (0: no grid), interpolated in :data:`GRID_TABLE`."""
    r = np.array([g[0] for g in GRID_TABLE])
    return (float(np.interp(ratio, r, [g[1] for g in GRID_TABLE])),
            float(np.interp(ratio, r, [g[2] for g in GRID_TABLE])))


@dataclass
class AntiScatterGrid:
    ratio: float = 0.0  # 0: no grid

    def __post_init__(self) -> None:
        self.ratio = _check_range("grid ratio", self.ratio, 0.0, 16.0, "give 0 (no grid) or e.g. 10 or 12")

    @property
    def transmissions(self) -> tuple[float, float]:
        return grid_transmissions(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        tp, ts = self.transmissions
        return {"ratio": self.ratio, "primary_transmission": tp, "scatter_transmission": ts,
                "source": "GRID_TABLE (typical focused grids at ~120 kVp; Chan et al. 1985, Fetterly & Schueler 2007)"}


# ---------------------------------------------------------------------------------------------------------------
# 3. detector
# ---------------------------------------------------------------------------------------------------------------
# published presampled MTF of a 0.6 mm structured-CsI flat panel with 0.127 mm pixels (Samei 2003, Med Phys
# 30:1747, abstract: MTF 0.2 at ~2.5 mm^-1 and 0.1 at ~3.8 mm^-1)
SAMEI_2003_CSI_MTF = {"pixel_pitch_mm": 0.127, "points": ((2.5, 0.2), (3.8, 0.1))}


def _sinc(x):
    return np.sinc(x)  # sin(pi x) / (pi x)


@lru_cache(maxsize=4)
def _fit_light_spread() -> tuple[float, float]:
    """(fc, n) of L(f) = 1 / (1 + (f/fc)^n) so that L(f) sinc(a f) passes through the two published points."""
    a = SAMEI_2003_CSI_MTF["pixel_pitch_mm"]
    (f1, m1), (f2, m2) = SAMEI_2003_CSI_MTF["points"]
    y1, y2 = 1.0 / (m1 / _sinc(a * f1)) - 1.0, 1.0 / (m2 / _sinc(a * f2)) - 1.0
    n = np.log(y2 / y1) / np.log(f2 / f1)
    fc = f1 / y1 ** (1.0 / n)
    return float(fc), float(n)


def mtf_light_spread(f, fc: float | None = None, n: float | None = None):
    """Light-spread part of the CsI MTF (no pixel aperture): 1 / (1 + (f/fc)^n), f in mm^-1."""
    fc0, n0 = _fit_light_spread()
    fc, n = fc or fc0, n or n0
    return 1.0 / (1.0 + (np.abs(np.asarray(f, dtype=np.float64)) / fc) ** n)


@dataclass
class DetectorModel:
    """Indirect CsI flat panel: focal-spot blur, quantum noise, MTF, electronic noise (see the module docstring).

    Dose: ``air_kerma_ugy`` is the air kerma at the detector in the *unattenuated* beam (no patient, no grid);
    ``photons_per_pixel`` (the physics ``--dose``) overrides it when given."""

    enabled: bool = False
    pixel_pitch_mm: float = 0.143  # native pitch: the aperture when the output pixels are smaller
    mtf_fc: float | None = None  # light-spread MTF parameters; None: the Samei 2003 fit
    mtf_n: float | None = None
    csi_thickness_mm: float = 0.6
    csi_fill_factor: float = 0.75  # packing density of columnar CsI
    air_kerma_ugy: float = 150.0  # unattenuated air kerma at the detector (uGy), see presets
    noise: bool = True  # quantum + electronic noise
    electronic_noise_quanta: float = 2.0  # rms, in absorbed-quanta units per native pixel
    focal_spot_mm: float = 0.0  # 0: point source

    def __post_init__(self) -> None:
        self.enabled, self.noise = bool(self.enabled), bool(self.noise)
        self.pixel_pitch_mm = _check_range("detector pixel_pitch_mm", self.pixel_pitch_mm, 0.01, 5.0, "give e.g. 0.143")
        if self.mtf_fc is not None:
            self.mtf_fc = _check_range("detector mtf_fc", self.mtf_fc, 0.05, 50.0, "give lp/mm, e.g. 1.0")
        if self.mtf_n is not None:
            self.mtf_n = _check_range("detector mtf_n", self.mtf_n, 0.2, 10.0, "give e.g. 1.3")
        self.csi_thickness_mm = _check_range("csi_thickness_mm", self.csi_thickness_mm, 0.0, 5.0, "give e.g. 0.6")
        self.csi_fill_factor = _check_range("csi_fill_factor", self.csi_fill_factor, 0.05, 1.0, "give e.g. 0.75")
        self.air_kerma_ugy = _check_range("detector air_kerma_ugy", self.air_kerma_ugy, 1e-3, 1e6, "give e.g. 150")
        self.electronic_noise_quanta = _check_range("electronic_noise_quanta", self.electronic_noise_quanta, 0.0,
                                                    1e4, "give e.g. 2")
        self.focal_spot_mm = _check_range("focal_spot_mm", self.focal_spot_mm, 0.0, 3.0, "give e.g. 1.2 (0: off)")

    def mtf(self, f, aperture_mm: float | None = None):
        """Presampled MTF: light spread x pixel aperture sinc (aperture: the native pitch unless given)."""
        a = self.pixel_pitch_mm if aperture_mm is None else aperture_mm
        return mtf_light_spread(f, self.mtf_fc, self.mtf_n) * np.abs(_sinc(a * np.asarray(f, dtype=np.float64)))

    def absorption(self, physics) -> float:
        """Spectrum-weighted fraction of photons absorbed in the CsI (xraydb CsI attenuation)."""
        import xraydb

        if physics.mode == "mono":
            e, w = np.array([float(physics.energy_kev)]), np.array([1.0])
        else:
            from dxr_core.drr.physics import spectrum

            e, w = spectrum(float(physics.kvp), float(physics.filtration_mm_al), float(physics.anode_angle_deg), 1.0,
                            float(getattr(physics, "filtration_mm_cu", 0.0)))
        mu = np.asarray(xraydb.material_mu("CsI", e * 1000.0, density=4.51 * self.csi_fill_factor)) / 10.0
        eta = 1.0 - np.exp(-mu * self.csi_thickness_mm)
        return float((eta * w).sum() / w.sum())

    def quanta_per_pixel(self, physics, pixel_area_mm2: float) -> float:
        """Absorbed quanta per output pixel in the unattenuated beam (no grid)."""
        if physics.photons_per_pixel is not None:
            return float(physics.photons_per_pixel)
        from dxr_core.drr.physics import beam_quality

        # photons per uGy of the tube spectrum (mono renders use their tube spectrum's number too)
        bq = beam_quality(float(physics.kvp), float(physics.filtration_mm_al), float(physics.anode_angle_deg),
                          float(getattr(physics, "filtration_mm_cu", 0.0)))
        return bq["photons_per_mm2_per_ugy"] * self.air_kerma_ugy * pixel_area_mm2 * self.absorption(physics)


def _fft_filter(img: np.ndarray, transfer, spacing: tuple[float, float], pad: int = 32) -> np.ndarray:
    """Apply a real, even transfer function H(fy, fx) (mm^-1) with reflect padding."""
    import scipy.fft as sfft

    a = np.pad(img.astype(np.float64), pad, mode="reflect")
    nr, nc = a.shape
    fy = np.fft.fftfreq(nr, d=spacing[0])[:, None]
    fx = np.fft.rfftfreq(nc, d=spacing[1])[None, :]
    out = sfft.irfft2(sfft.rfft2(a, workers=-1) * transfer(fy, fx), s=(nr, nc), workers=-1)
    return out[pad:-pad, pad:-pad].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# 4. processing
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Processing:
    """``raw``: clip((P - w0) / (w1 - w0)) with the physics window (today's output). ``default``: see the module
    docstring; every number below is recorded."""

    mode: str = "raw"
    range_percentiles: tuple[float, float] = (1.0, 99.5)  # of the log image inside the exposed body
    levels: int = 6  # Laplacian pyramid levels
    band_gains: tuple[float, ...] = (1.4, 1.8, 1.8, 1.5, 1.2, 1.0)  # finest first
    band_power: float = 0.7  # p of the non-linear band amplification
    band_scale: float = 0.02  # a (in normalised log units)
    # tone scale: set with bench/drr_realism.py against 86 real CC BY radiographs (docs/drr_physics.md, "Realism
    # bench"): slope 6 / midpoint 0.5 / low-pass 0.55 put dense regions at a mean grey of 0.86 where real ones sit
    # at 0.64; stronger range compression and a gentler, darker-centred curve match their regional histograms
    lowpass_gain: float = 0.3  # dynamic range compression of the coarsest band
    tone_contrast: float = 3.5  # slope of the logistic tone curve
    tone_midpoint: float = 0.6

    def __post_init__(self) -> None:
        self.mode = str(self.mode).lower()
        if self.mode not in ("raw", "default"):
            raise OptionError(f"processing {self.mode!r} is unknown; choose 'raw' (today's window) or 'default'.")
        lo, hi = (float(v) for v in self.range_percentiles)
        if not (0.0 <= lo < hi <= 100.0):
            raise OptionError(f"range_percentiles {self.range_percentiles} must be (low, high) within 0..100.")
        self.range_percentiles = (lo, hi)
        self.levels = int(_check_range("processing levels", self.levels, 1, 10, "give e.g. 6"))
        self.band_gains = tuple(float(g) for g in self.band_gains)
        if not self.band_gains or any(not (0.0 <= g <= 10.0) for g in self.band_gains):
            raise OptionError(f"band_gains {self.band_gains} must be numbers in 0..10, finest band first.")
        self.band_power = _check_range("band_power", self.band_power, 0.1, 2.0, "give e.g. 0.7")
        self.band_scale = _check_range("band_scale", self.band_scale, 1e-4, 1.0, "give e.g. 0.02")
        self.lowpass_gain = _check_range("lowpass_gain", self.lowpass_gain, 0.0, 2.0, "give e.g. 0.55")
        self.tone_contrast = _check_range("tone_contrast", self.tone_contrast, 0.1, 50.0, "give e.g. 6")
        self.tone_midpoint = _check_range("tone_midpoint", self.tone_midpoint, 0.0, 1.0, "give e.g. 0.5")

    def auto_range(self, log_image: np.ndarray) -> tuple[float, float]:
        """Exposure recognition: percentiles of the log image over the attenuating part (P > 10 % of its
        99.9th percentile, i.e. not the direct beam)."""
        p = np.asarray(log_image, dtype=np.float64)
        top = float(np.percentile(p, 99.9))
        body = p[p > 0.1 * top] if top > 0 else p.ravel()
        if body.size < 16:
            body = p.ravel()
        lo, hi = (float(v) for v in np.percentile(body, self.range_percentiles))
        if not hi > lo:
            hi = lo + 1.0
        return lo, hi

    def apply(self, log_image: np.ndarray, physics, value_range: tuple[float, float] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if self.mode == "raw":
            return physics.to_image(log_image), {"mode": "raw", "window_log": list(physics.window)}
        from scipy.ndimage import gaussian_filter

        lo, hi = value_range if value_range is not None else self.auto_range(log_image)
        x = (np.asarray(log_image, dtype=np.float64) - lo) / (hi - lo)
        gauss, bands = [x], []
        for _ in range(self.levels - 1):
            g = gauss[-1]
            if min(g.shape) < 8:
                break
            gauss.append(gaussian_filter(g, 1.0, mode="reflect")[::2, ::2])  # Burt-Adelson REDUCE

        def expand(small, shape):  # bilinear 2x (pixel centres aligned with the 2x2 decimation's), no blockiness
            import torch
            import torch.nn.functional as F

            t = torch.from_numpy(np.ascontiguousarray(small))[None, None]
            big = F.interpolate(t, size=(small.shape[0] * 2, small.shape[1] * 2), mode="bilinear",
                                align_corners=False)[0, 0, : shape[0], : shape[1]]
            return big.numpy()

        for k in range(len(gauss) - 1):
            bands.append(gauss[k] - expand(gauss[k + 1], gauss[k].shape))
        out = self.lowpass_gain * (gauss[-1] - 0.5) + 0.5
        a, pw = self.band_scale, self.band_power
        for k in range(len(bands) - 1, -1, -1):
            gk = self.band_gains[min(k, len(self.band_gains) - 1)]
            c = bands[k]
            out = expand(out, c.shape) + gk * a * np.sign(c) * (np.abs(c) / a) ** pw
        s = lambda v: 1.0 / (1.0 + np.exp(-self.tone_contrast * (v - self.tone_midpoint)))  # noqa: E731
        y = (s(out) - s(0.0)) / (s(1.0) - s(0.0))
        img = np.clip(y, 0.0, 1.0).astype(np.float32)
        rec = {"mode": "default", "value_range_log": [lo, hi], "pyramid_levels": len(gauss),
               "chain": "log -> percentile range -> Laplacian pyramid, c' = g_k a sign(c)|c/a|^p, low-pass x "
                        "lowpass_gain -> logistic tone curve -> [0,1]"}
        return img, rec


# ---------------------------------------------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Acquisition:
    """Every acquisition step after projection; all off by default (= today's raw DRR)."""

    preset: str | None = None
    scatter: ScatterModel = field(default_factory=ScatterModel)
    grid: AntiScatterGrid = field(default_factory=AntiScatterGrid)
    detector: DetectorModel = field(default_factory=DetectorModel)
    processing: Processing = field(default_factory=Processing)

    @property
    def active(self) -> bool:
        return bool(self.scatter.enabled or self.detector.enabled or self.processing.mode != "raw"
                    or self.grid.ratio > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset,
                "scatter": asdict(self.scatter) | {"model": "scatter-kernel superposition (Sun & Star-Lack 2010)"},
                "grid": self.grid.to_dict(),
                "detector": asdict(self.detector) | {"model": "indirect CsI flat panel; MTF fit to Samei 2003"},
                "processing": asdict(self.processing) | {"range_percentiles": list(self.processing.range_percentiles),
                                                         "band_gains": list(self.processing.band_gains)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Acquisition":
        def pick(kind, v):
            names = {f.name for f in fields(kind)}
            return kind(**{k: (tuple(x) if isinstance(x, list) else x) for k, x in (v or {}).items() if k in names})

        return cls(preset=d.get("preset"), scatter=pick(ScatterModel, d.get("scatter")),
                   grid=pick(AntiScatterGrid, d.get("grid")), detector=pick(DetectorModel, d.get("detector")),
                   processing=pick(Processing, d.get("processing")))


def off_record() -> dict[str, Any]:
    """Sidecar record of a render without acquisition realism (today's raw DRR)."""
    return {"preset": None, "scatter": {"enabled": False}, "grid": {"ratio": 0.0}, "detector": {"enabled": False},
            "processing": {"mode": "raw"}, "noise": "physics.photons_per_pixel (Poisson) or none"}


def apply_acquisition(acq: Acquisition, physics, geometry, primary: np.ndarray, seed,
                      value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Run the chain on the noise-free primary transmission. Returns image, log_image, scatter (no grid, same
    units as ``primary``), spr (at the detector, after the grid), record (for the sidecar) and timings (s)."""
    import time

    t0 = time.perf_counter()
    p = np.asarray(primary, dtype=np.float32)
    spacing = tuple(float(s) for s in geometry.pixel_spacing_mm)
    tp, ts = acq.grid.transmissions
    rec: dict[str, Any] = acq.to_dict()
    timings: dict[str, float] = {}
    # 1-2. scatter and grid
    scatter = acq.scatter.scatter(p, spacing) if acq.scatter.enabled else None
    t1 = time.perf_counter()
    timings["scatter_s"] = t1 - t0
    det = acq.detector
    prim = p
    if det.enabled and det.focal_spot_mm > 0:
        m = geometry.sid_mm / geometry.sad_mm
        sigma = det.focal_spot_mm * max(m - 1.0, 0.0) / 2.3548
        if sigma > 0:
            prim = _fft_filter(p, lambda fy, fx: np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fy ** 2 + fx ** 2)), spacing)
        rec["detector"]["focal_spot_blur_fwhm_mm"] = det.focal_spot_mm * max(m - 1.0, 0.0)
    rel = prim if scatter is None else prim + (ts / tp) * scatter  # I / I0 after flat-field (grid) correction
    spr = None if scatter is None else (ts / tp) * scatter / np.maximum(p, 1e-12)
    # 3. detector
    if det.enabled:
        area = spacing[0] * spacing[1]
        n_air = det.quanta_per_pixel(physics, area) * tp  # absorbed quanta per pixel in the flat field
        aperture = max(det.pixel_pitch_mm, spacing[0], spacing[1])
        rec["detector"].update({"quanta_per_pixel_flat_field": n_air, "aperture_mm": aperture,
                                "csi_absorption": det.absorption(physics)})
        sig = rel.astype(np.float64) * n_air
        if det.noise:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            sig = rng.poisson(np.clip(sig, 0.0, None)).astype(np.float64)
        sig = _fft_filter(sig, lambda fy, fx: det.mtf(np.sqrt(fy ** 2 + fx ** 2), 0.0)
                          * np.abs(_sinc(aperture * fy) * _sinc(aperture * fx)), spacing).astype(np.float64)
        if det.noise and det.electronic_noise_quanta > 0:
            sigma_e = det.electronic_noise_quanta * np.sqrt(max(area / det.pixel_pitch_mm ** 2, 1.0))
            sig = sig + rng.normal(0.0, sigma_e, sig.shape)
            rec["detector"]["electronic_noise_quanta_per_pixel"] = float(sigma_e)
        t = (np.maximum(sig, 0.5) / n_air).astype(np.float32)
    else:
        t = physics.apply_noise(rel.astype(np.float32), seed)
    t2 = time.perf_counter()
    timings["detector_s"] = t2 - t1
    log_img = (-np.log(np.maximum(t, 1e-30))).astype(np.float32)
    image, prec = acq.processing.apply(log_img, physics, value_range)
    rec["processing"].update(prec)
    timings["processing_s"] = time.perf_counter() - t2
    if spr is not None:
        rec["scatter"]["spr_median"] = float(np.median(spr))
    rec["noise"] = ("detector: Poisson(absorbed quanta) + electronic" if det.enabled and det.noise else
                    "physics.photons_per_pixel (Poisson)" if (not det.enabled and physics.photons_per_pixel)
                    else "none")
    return {"image": image, "log_image": log_img, "scatter": scatter, "spr": spr, "record": rec, "timings": timings}


# ---------------------------------------------------------------------------------------------------------------
# regions (for SPR reporting and tests)
# ---------------------------------------------------------------------------------------------------------------
def chest_region_masks(volume_hu, geometry, device: str = "cpu") -> dict[str, np.ndarray]:
    """Boolean detector masks ``lungs`` and ``mediastinum`` of a chest CT, from projected path lengths.

    lungs: pixels whose lung path (-950 < HU < -400) is >= 50 % of the maximum lung path;
    mediastinum: pixels between the two lung fields (columns between the lungs' inner edges, rows of the lung
    fields) whose lung path is < 10 % of the maximum and whose soft-tissue path (HU > -400) is >= 60 % of its
    maximum - the heart and great vessels in front of the spine."""
    from dxr_core.drr.projector import project

    a = np.asarray(volume_hu.array, dtype=np.float32)
    lung = project(volume_hu.with_array(((a > -950) & (a < -400)).astype(np.float32)), geometry, device=device)
    soft = project(volume_hu.with_array((a >= -400).astype(np.float32)), geometry, device=device)
    lungs = lung >= 0.5 * lung.max()
    rows = np.nonzero(lungs.any(1))[0]
    med = np.zeros_like(lungs)
    if rows.size:
        r0, r1 = rows.min(), rows.max() + 1
        cols = np.nonzero(lungs.any(0))[0]
        mid = (cols.min() + cols.max()) // 2
        left, right = cols[cols < mid], cols[cols > mid]
        if left.size and right.size:
            band = np.zeros_like(lungs)
            band[r0:r1, :] = True
            # the inner edges: last lung column left of the midline and first right of it, per row band
            inner_l = max(int(c) for c in left if lungs[r0:r1, c].any())
            inner_r = min(int(c) for c in right if lungs[r0:r1, c].any())
            band[:, : min(inner_l, inner_r)] = False
            band[:, max(inner_l, inner_r) + 1:] = False
            med = band & (lung < 0.1 * lung.max()) & (soft >= 0.6 * soft.max())
    return {"lungs": lungs, "mediastinum": med}


def spr_by_region(spr: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Median scatter-to-primary ratio inside each mask."""
    return {k: float(np.median(spr[m])) if m.any() else float("nan") for k, m in masks.items()}
