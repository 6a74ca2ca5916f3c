"""X-ray physics for DRRs: HU -> attenuation, tube spectra, Beer-Lambert, quantum noise, display window.

Where every number comes from:

* Attenuation coefficients are *total* attenuation with coherent scattering (``xraydb``, Elam/Ravel/Sieber
  tables): water and air by name via ``xraydb.material_mu(name, energy_eV)`` (1/cm, converted to 1/mm);
  cortical bone is ICRU Report 44 "Bone, Cortical" (density 1.92 g/cm^3, mass fractions H 3.4, C 15.5, N 4.2,
  O 43.5, Na 0.1, Mg 0.2, P 10.3, S 0.3, Ca 22.5 %) computed with the mixture rule
  mu/rho = sum_i w_i (mu/rho)_i from ``xraydb.mu_elam(element, energy_eV)``.
* HU -> material (a two-segment, two-basis model, as in Schneider et al. 1996 / the usual DRR practice):
  every voxel is ``w`` times water (at 1 g/cm^3) plus ``b`` times ICRU-44 cortical bone (at 1.92 g/cm^3):
    - HU <= 0   : w = 1 + HU/1000 (air..water: water-like matter at reduced density; air's mass attenuation is
      within a few % of water's at diagnostic energies), b = 0;
    - 0 < HU < HU_bone : w = 1 - f, b = f with f = HU / HU_bone (water/bone mixture by volume);
    - HU >= HU_bone : w = 0, b = HU / HU_bone (bone denser than cortical bone, e.g. teeth or metal, scaled).
  HU_bone = 1000 (mu_bone / mu_water - 1) evaluated at the CT scanner's effective energy
  (``ct_effective_energy_kev``, default 70 keV, typical of a 120 kVp CT beam), so the mapping reproduces the
  CT's own numbers for water and bone. Then mu(E) = w mu_water(E) + b mu_bone(E).
* Tube spectra: ``spekpy`` (Poludniowski et al. 2021) at ``kvp`` with tungsten anode angle ``anode_angle_deg``,
  binned at ``energy_bin_kev``. spekpy's bare ``Spek`` beam is *unfiltered* (only the anode's self-absorption;
  its first HVL at 120 kV is ~0.06 mm Al), so every filter is added explicitly: ``filtration_mm_al`` is the
  *total* aluminium-equivalent filtration (inherent tube window + collimator + added Al) and ``filtration_mm_cu``
  any added copper. The default (2.5 mm Al, no Cu) gives a first HVL of 4.2 mm Al at 120 kV, just below the
  IEC 60601-1-3:2008 (Table 3) minimum of 4.3 mm Al at 120 kV; the chest presets (:mod:`dxr_core.drr.presets`,
  e.g. 3.5 mm Al + 0.1 mm Cu -> HVL 6.8 mm Al) are above it. ``hvl_mm_al`` (spekpy's first HVL, air kerma)
  and ``hvl_effective_energy_kev`` (the energy of the mono beam with that HVL in Al) are recorded in the
  sidecar next to ``mean_energy_kev``.
* Mean energy: ``mean_energy_kev`` is the detector-weighted *mean* energy sum_E s(E) E (poly) or ``energy_kev``
  (mono); it is the energy at which ``line_integral`` is evaluated. (It used to be called
  ``effective_energy_kev``; that name stays as a deprecated alias with the same value. The conventional
  *effective* energy - the mono energy with the beam's HVL - is ``hvl_effective_energy_kev``.)
* Beer-Lambert: I/I0 = exp(-integral mu dl) (mono); poly: I/I0 = sum_E s(E) exp(-L_w mu_w(E) - L_b mu_b(E)) / sum_E s(E)
  with s(E) = fluence(E) * E for an energy-integrating detector (default) or fluence(E) for photon counting, and
  L_w, L_b the projected water/bone path lengths (mm) — so beam hardening is modelled.
* Quantum noise: the detected signal is Poisson(N0 * I/I0) / N0 with N0 = ``photons_per_pixel`` (unattenuated
  photons per pixel); counts below 0.5 are set to 0.5 before the log. (For an energy-integrating detector this
  is the usual photon-count approximation of the compound-Poisson statistics.)
* Air outside the patient (``air_hu``, default -950 HU; None: off): along each CT row parallel to the detector
  rows, voxels outside [first, last voxel above air_hu] are air outside the body and contribute exactly 0;
  voxels inside that span keep their values (lung, even emphysematous lung below -950 HU, or the trachea).
  Reason: CT air is noisy (e.g. -1000 +- 10 HU) and the HU -> material clamp at -1000 HU keeps only the
  positive half of that noise, so tens of cm of air around the patient would add a clamp-induced positive bias
  (~ +4 HU mean at sigma 10 HU) and nothing could be skipped as empty. Projectors that integrate the volume as
  given (e.g. plastimatch exact, --hu-conversion none) include that air; ``project`` (raw values) does too.
* Display: P = -ln(I/I0) (the "log" image), image = clip((P - window_lo) / (window_hi - window_lo), 0, 1):
  bone/high attenuation bright, air dark. The window is fixed (default 0..7, chosen so a typical adult chest at
  60 keV or 120 kVp lands inside it) and recorded in the sidecar, so two renders with the same window are
  directly comparable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from dxr_core.errors import OptionError

__all__ = ["Physics", "physics_from_options", "hu_to_mu", "hu_to_basis", "mu_water", "mu_bone", "spectrum",
           "hu_bone_reference", "beam_quality", "mono_hvl_mm_al", "IEC_60601_1_3_MIN_HVL_MM_AL"]

# IEC 60601-1-3:2008 Table 3 (also 21 CFR 1020.30(m)(1) Table 1): minimum permissible first HVL (mm Al) of the
# useful beam of general radiography X-ray equipment, by tube voltage (kV); linear interpolation in between.
IEC_60601_1_3_MIN_HVL_MM_AL = {50: 1.8, 60: 2.2, 70: 2.5, 80: 2.9, 90: 3.2, 100: 3.6, 110: 3.9, 120: 4.3,
                               130: 4.7, 140: 5.0, 150: 5.4}

# ICRU Report 44 cortical bone: mass fractions (%) and density (g/cm^3)
ICRU44_CORTICAL_BONE = {"H": 3.4, "C": 15.5, "N": 4.2, "O": 43.5, "Na": 0.1, "Mg": 0.2, "P": 10.3, "S": 0.3, "Ca": 22.5}
ICRU44_CORTICAL_BONE_DENSITY = 1.92


def _energies_ev(energy_kev) -> np.ndarray:
    return np.atleast_1d(np.asarray(energy_kev, dtype=np.float64)) * 1000.0


def mu_water(energy_kev) -> np.ndarray:
    """Linear attenuation of liquid water (1 g/cm^3) in 1/mm at ``energy_kev`` (xraydb, 'water' by name)."""
    import xraydb

    return np.asarray(xraydb.material_mu("water", _energies_ev(energy_kev)), dtype=np.float64) / 10.0


def mu_air(energy_kev) -> np.ndarray:
    """Linear attenuation of dry air in 1/mm (xraydb, 'air' by name)."""
    import xraydb

    return np.asarray(xraydb.material_mu("air", _energies_ev(energy_kev)), dtype=np.float64) / 10.0


def mu_bone(energy_kev) -> np.ndarray:
    """Linear attenuation of ICRU-44 cortical bone (1.92 g/cm^3) in 1/mm: mixture rule over xraydb.mu_elam."""
    import xraydb

    e = _energies_ev(energy_kev)
    mass = sum(w / 100.0 * np.asarray(xraydb.mu_elam(el, e), dtype=np.float64)
               for el, w in ICRU44_CORTICAL_BONE.items())
    return mass * ICRU44_CORTICAL_BONE_DENSITY / 10.0


@lru_cache(maxsize=16)
def hu_bone_reference(ct_effective_energy_kev: float = 70.0) -> float:
    """HU of ICRU-44 cortical bone on a CT whose effective energy is ``ct_effective_energy_kev``."""
    return float(1000.0 * (mu_bone(ct_effective_energy_kev)[0] / mu_water(ct_effective_energy_kev)[0] - 1.0))


def hu_to_basis(hu: torch.Tensor, hu_bone: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(water fraction w, bone fraction b) per voxel, see the module docstring. float32 tensors like ``hu``."""
    hu = hu.to(torch.float32)
    f = hu * (1.0 / hu_bone)
    b = f.clamp(min=0.0)
    w = torch.where(hu <= 0, (1.0 + hu * 1e-3).clamp(min=0.0), (1.0 - f).clamp(min=0.0))
    return w, b


def hu_to_mu(hu, energy_kev: float = 60.0, ct_effective_energy_kev: float = 70.0):
    """HU -> linear attenuation (1/mm) at ``energy_kev`` (monoenergetic), water/bone model above.

    Accepts a numpy array or torch tensor and returns the same kind (float32)."""
    is_np = not isinstance(hu, torch.Tensor)
    t = torch.as_tensor(np.asarray(hu, dtype=np.float32) if is_np else hu)
    w, b = hu_to_basis(t, hu_bone_reference(float(ct_effective_energy_kev)))
    mu = w * float(mu_water(energy_kev)[0]) + b * float(mu_bone(energy_kev)[0])
    return mu.numpy() if is_np else mu


def _spek(kvp: float, filtration_mm_al: float, anode_angle_deg: float, energy_bin_kev: float,
          filtration_mm_cu: float = 0.0):
    """spekpy beam with every filter added explicitly (the bare ``Spek`` beam is unfiltered)."""
    import spekpy as sp

    s = sp.Spek(kvp=float(kvp), th=float(anode_angle_deg), dk=float(energy_bin_kev))
    if filtration_mm_al > 0:
        s.filter("Al", float(filtration_mm_al))
    if filtration_mm_cu > 0:
        s.filter("Cu", float(filtration_mm_cu))
    return s


@lru_cache(maxsize=16)
def spectrum(kvp: float, filtration_mm_al: float, anode_angle_deg: float = 12.0,
             energy_bin_kev: float = 1.0, filtration_mm_cu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(bin energies keV, photon fluence per bin, arbitrary units) from spekpy; zero bins dropped.

    ``filtration_mm_al``: total Al filtration (mm); ``filtration_mm_cu``: added Cu (mm); both added explicitly."""
    s = _spek(kvp, filtration_mm_al, anode_angle_deg, energy_bin_kev, filtration_mm_cu)
    k, phi = s.get_spectrum()
    k = np.asarray(k, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    keep = phi > phi.max() * 1e-6
    return k[keep], phi[keep]


@lru_cache(maxsize=32)
def beam_quality(kvp: float, filtration_mm_al: float, anode_angle_deg: float = 12.0,
                 filtration_mm_cu: float = 0.0) -> dict[str, float]:
    """First HVL (mm Al, air kerma), spekpy's HVL-effective energy (keV), mean fluence energy (keV) and
    photons per mm^2 per uGy air kerma of the filtered spectrum (spekpy, 0.5 keV bins)."""
    s = _spek(kvp, filtration_mm_al, anode_angle_deg, 0.5, filtration_mm_cu)
    flu, kerma = float(s.get_flu()), float(s.get_kerma())  # photons/cm^2/mAs at 1 m, uGy/mAs at 1 m
    return {"hvl_mm_al": float(s.get_hvl1()), "hvl_effective_energy_kev": float(s.get_eeff()),
            "mean_fluence_energy_kev": float(s.get_emean()), "photons_per_mm2_per_ugy": flu / kerma / 100.0}


def mono_hvl_mm_al(energy_kev: float) -> float:
    """HVL (mm Al) of a mono beam: ln 2 / mu_Al(E) (xraydb, Al at 2.699 g/cm^3)."""
    import xraydb

    mu = float(np.asarray(xraydb.material_mu("Al", _energies_ev(energy_kev), density=2.699))[0]) / 10.0
    return float(np.log(2.0) / mu)


@lru_cache(maxsize=64)
def _mu_pair(energies_kev: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(energies_kev, dtype=np.float64)
    return mu_water(e), mu_bone(e)


@dataclass
class Physics:
    """Acquisition physics of a DRR (see the module docstring for every model and its sources)."""

    mode: str = "mono"  # "mono" | "poly"
    energy_kev: float = 60.0  # mono energy
    kvp: float = 120.0  # poly: tube voltage
    filtration_mm_al: float = 2.5  # poly: total Al filtration (mm), added to spekpy's unfiltered beam
    filtration_mm_cu: float = 0.0  # poly: added Cu filtration (mm)
    anode_angle_deg: float = 12.0  # poly: tungsten anode angle (spekpy)
    energy_bin_kev: float = 2.0  # poly: spectrum bin width
    detector: str = "energy_integrating"  # or "photon_counting" (spectrum weighting)
    photons_per_pixel: float | None = None  # None: noise-free; else unattenuated photons per pixel
    window: tuple[float, float] = (0.0, 7.0)  # log-image window (P = -ln I/I0) mapped to [0, 1]
    ct_effective_energy_kev: float = 70.0  # CT effective energy that defines HU -> bone fraction
    air_hu: float | None = -950.0  # air clipping threshold (HU) outside the body; None: integrate all air

    def __post_init__(self) -> None:
        self.mode = str(self.mode).lower()
        if self.mode not in ("mono", "poly"):
            raise OptionError(f"Physics mode {self.mode!r} is unknown; choose 'mono' or 'poly'.")
        if self.detector not in ("energy_integrating", "photon_counting"):
            raise OptionError(f"detector {self.detector!r} is unknown; "
                              "choose 'energy_integrating' or 'photon_counting'.")
        if not (1.0 <= float(self.energy_kev) <= 500.0):
            raise OptionError(f"energy_kev {self.energy_kev} is outside 1..500 keV; give a diagnostic X-ray energy.")
        if not (20.0 <= float(self.kvp) <= 150.0):
            raise OptionError(f"kvp {self.kvp} is outside 20..150 kV (the range spekpy models); give e.g. 120.")
        if float(self.filtration_mm_al) < 0:
            raise OptionError(f"filtration_mm_al {self.filtration_mm_al} is negative; give 0 or more mm of Al.")
        if not (0.0 <= float(self.filtration_mm_cu) <= 5.0):
            raise OptionError(f"filtration_mm_cu {self.filtration_mm_cu} is outside 0..5 mm; give e.g. 0.1 (mm of Cu).")
        if not (0.1 <= float(self.energy_bin_kev) <= 10.0):
            raise OptionError(f"energy_bin_kev {self.energy_bin_kev} is outside 0.1..10 keV.")
        if self.photons_per_pixel is not None and not (float(self.photons_per_pixel) > 0
                                                       and np.isfinite(self.photons_per_pixel)):
            raise OptionError(f"photons_per_pixel {self.photons_per_pixel} must be a positive number "
                              "(or None for no noise).")
        lo, hi = (float(v) for v in self.window)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise OptionError(f"window {self.window} must be (low, high) with high > low, in units of -ln(I/I0).")
        self.window = (lo, hi)
        if self.air_hu is not None:
            if isinstance(self.air_hu, bool) or not isinstance(self.air_hu, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(self.air_hu):
                raise OptionError(f"air_hu {self.air_hu!r} must be a finite HU value (e.g. -950) "
                                  "or None (no air clipping).")
            self.air_hu = float(self.air_hu)

    # --- spectra / coefficients -------------------------------------------------------------------------------
    @property
    def hu_bone(self) -> float:
        return hu_bone_reference(float(self.ct_effective_energy_kev))

    def spectrum_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(energies keV, normalised detector weights s(E)) for poly mode."""
        if float(self.filtration_mm_cu) > 0:
            k, phi = spectrum(float(self.kvp), float(self.filtration_mm_al), float(self.anode_angle_deg),
                              float(self.energy_bin_kev), float(self.filtration_mm_cu))
        else:  # the historical call (same cache key, same numbers)
            k, phi = spectrum(float(self.kvp), float(self.filtration_mm_al), float(self.anode_angle_deg),
                              float(self.energy_bin_kev))
        s = phi * k if self.detector == "energy_integrating" else phi
        return k, s / s.sum()

    @property
    def mean_energy_kev(self) -> float:
        """mono: energy_kev; poly: detector-weighted mean energy of the spectrum (used for ``line_integral``)."""
        if self.mode == "mono":
            return float(self.energy_kev)
        k, s = self.spectrum_weights()
        return float((k * s).sum())

    @property
    def effective_energy_kev(self) -> float:
        """Deprecated alias of :attr:`mean_energy_kev` (it is a mean energy, not an HVL-effective energy; see
        :attr:`hvl_effective_energy_kev`)."""
        import warnings

        warnings.warn("Physics.effective_energy_kev is the detector-weighted mean energy and is deprecated; use "
                      "Physics.mean_energy_kev (or hvl_effective_energy_kev for the HVL-effective energy).",
                      DeprecationWarning, stacklevel=2)
        return self.mean_energy_kev

    def beam_quality(self) -> dict[str, float]:
        """Beam quality: first HVL (mm Al), HVL-effective energy (keV), photons per mm^2 per uGy air kerma.
        poly: from spekpy for the filtered spectrum; mono: HVL = ln2 / mu_Al(E), effective energy = E."""
        if self.mode == "mono":
            return {"hvl_mm_al": mono_hvl_mm_al(float(self.energy_kev)),
                    "hvl_effective_energy_kev": float(self.energy_kev)}
        return beam_quality(float(self.kvp), float(self.filtration_mm_al), float(self.anode_angle_deg),
                            float(self.filtration_mm_cu))

    @property
    def hvl_mm_al(self) -> float:
        """First half-value layer in mm Al (see :meth:`beam_quality`)."""
        return self.beam_quality()["hvl_mm_al"]

    @property
    def hvl_effective_energy_kev(self) -> float:
        """Energy of the mono beam with the same first HVL in Al (see :meth:`beam_quality`)."""
        return self.beam_quality()["hvl_effective_energy_kev"]

    def basis_mu(self, energy_kev) -> tuple[np.ndarray, np.ndarray]:
        """(mu_water, mu_bone) in 1/mm at the given energies (cached)."""
        return _mu_pair(tuple(float(e) for e in np.atleast_1d(energy_kev)))

    # --- Beer-Lambert ----------------------------------------------------------------------------------------
    def transmission(self, lw: torch.Tensor, lb: torch.Tensor | None = None,
                     mono_line_integral: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-free I/I0 from basis path lengths (poly) or from the mono line integral (mono)."""
        if self.mode == "mono":
            if mono_line_integral is None:
                mw, mb = self.basis_mu(self.energy_kev)
                mono_line_integral = lw * float(mw[0]) + lb * float(mb[0])  # type: ignore[operator]
            return torch.exp(-mono_line_integral)
        k, s = self.spectrum_weights()
        mw, mb = self.basis_mu(k)
        dev = lw.device
        mw_t = torch.as_tensor(mw, dtype=torch.float32, device=dev)
        mb_t = torch.as_tensor(mb, dtype=torch.float32, device=dev)
        s_t = torch.as_tensor(s, dtype=torch.float32, device=dev)
        # per pixel: sum_E s_E exp(-(L_w mu_w(E) + L_b mu_b(E))), in cache-sized chunks of (pixels x bins); numpy
        # float32 on CPU (vectorised exp, no thread-pool wake-ups for small boxes), torch elsewhere
        if dev.type == "cpu":
            fw = np.ascontiguousarray(lw.reshape(-1).numpy(), dtype=np.float32)
            fb = np.ascontiguousarray(lb.reshape(-1).numpy(), dtype=np.float32)  # type: ignore[union-attr]
            nmw, nmb = (-mw).astype(np.float32), (-mb).astype(np.float32)
            s32 = s.astype(np.float32)
            res = np.empty(fw.shape[0], dtype=np.float32)
            step = max(1, (1 << 16) // len(k))
            e = np.empty((min(step, fw.shape[0]), len(k)), dtype=np.float32)
            e2 = np.empty_like(e)
            for i in range(0, fw.shape[0], step):
                n = min(step, fw.shape[0] - i)
                a, b = e[:n], e2[:n]
                np.multiply.outer(fw[i:i + n], nmw, out=a)
                np.multiply.outer(fb[i:i + n], nmb, out=b)
                a += b
                np.exp(a, out=a)
                np.dot(a, s32, out=res[i:i + n])
            return torch.from_numpy(res).reshape(lw.shape)
        flat_w, flat_b = lw.reshape(-1), lb.reshape(-1)  # type: ignore[union-attr]
        out = torch.empty_like(flat_w)
        step = max(1, (1 << 22) // len(k))  # bound the (pixels x bins) temporary
        for i in range(0, flat_w.numel(), step):
            e = torch.exp(-(flat_w[i:i + step, None] * mw_t[None] + flat_b[i:i + step, None] * mb_t[None]))
            out[i:i + step] = e @ s_t
        return out.reshape(lw.shape)

    def apply_noise(self, transmission: np.ndarray, seed: int | np.random.Generator | None) -> np.ndarray:
        """Quantum noise: Poisson(N0 T) / N0 (counts < 0.5 -> 0.5). Deterministic for a given seed."""
        if self.photons_per_pixel is None:
            return transmission
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n0 = float(self.photons_per_pixel)
        counts = rng.poisson(np.clip(transmission, 0.0, None).astype(np.float64) * n0)
        return (np.maximum(counts, 0.5) / n0).astype(np.float32)

    def to_image(self, log_image: np.ndarray) -> np.ndarray:
        lo, hi = self.window
        return np.clip((log_image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window)
        d["mean_energy_kev"] = self.mean_energy_kev
        d["effective_energy_kev"] = d["mean_energy_kev"]  # deprecated key (a mean energy), kept for readers
        d["hvl_mm_al"] = self.hvl_mm_al
        d["hvl_effective_energy_kev"] = self.hvl_effective_energy_kev
        d["hu_bone"] = self.hu_bone
        d["image_convention"] = ("image = clip((-ln(I/I0) - window[0]) / (window[1] - window[0]), 0, 1); "
                                 "bone bright, air dark")
        d["coefficients"] = ("xraydb total attenuation: water/air by name, ICRU-44 cortical bone by mass fractions; "
                             "HU<=0: water at density 1+HU/1000; 0<HU: water/bone mix with f=HU/hu_bone")
        if self.mode == "poly":
            d["spectrum_source"] = "spekpy"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Physics":
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        if "window" in kw:
            kw["window"] = tuple(kw["window"])
        return cls(**kw)


def physics_from_options(mode: str, kvp: float, photons_per_pixel: float | None = None,
                         energy_kev: float | None = None,
                         option_names: str = "mode, kvp, energy_kev and dose") -> Physics:
    """:class:`Physics` from user options (CLI flags, request parameters); an invalid combination is one
    OptionError that names the options to check (``option_names``, as the caller spells them)."""
    kw: dict[str, Any] = {"mode": mode, "kvp": kvp, "photons_per_pixel": photons_per_pixel}
    if energy_kev is not None:
        kw["energy_kev"] = energy_kev
    try:
        return Physics(**kw)
    except (TypeError, ValueError) as err:
        raise OptionError(f"Invalid physics settings ({err}); check {option_names}.") from None
