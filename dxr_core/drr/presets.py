"""Chest radiography presets: geometry, beam, grid, detector and dose of a clinical acquisition.

Imported by the ``dxr`` parser, so this module imports neither torch nor the projector.

Sources (numbers that a protocol fixes are taken from it; the rest are typical values, marked "typical"):

* **PA chest** - European guidelines on quality criteria for diagnostic radiographic images, EUR 16260 EN
  (European Commission, 1996), "Example of good radiographic technique", chest PA: vertical stand with grid,
  nominal focal spot <= 1.3, total filtration >= 3.0 mm Al, anti-scatter grid r = 10 (40 /cm), focus-film
  distance 180 (140-200) cm, 125 kV, exposure time < 20 ms, entrance surface dose of a standard patient
  0.3 mGy. Filtration here: 3.5 mm Al total + 0.1 mm Cu (the copper pre-filter common on DR stands; with it the
  first HVL is ~7 mm Al, above the IEC 60601-1-3:2008 Table 3 minimum, 4.3 mm Al at 120 kV).
* **Lateral chest** - EUR 16260, chest lateral: as PA but entrance surface dose 1.5 mGy, exposure time < 40 ms.
* **AP portable (bedside)** - no EUR 16260 criterion; typical bedside practice (e.g. AAPM Report No. 116 (2009)
  for the exposure-index framework; Bontrager & Lampignano, *Textbook of Radiographic Positioning*, AP supine /
  semi-erect chest): SID ~100 cm, 90-110 kV, low-ratio grid (6:1-8:1) or none, patient on the cassette.
* **Detector** - 43 x 43 cm indirect CsI flat panel with 0.143 mm pixels (3000 x 3000, e.g. Trixell Pixium
  4600 as characterised by Samei & Flynn 2003, Med Phys 30:608); bedside: 0.16 mm (typical wireless CsI).
* **Magnification** M = SID / SAD with the isocentre (the CT's centre = the patient's mid-plane) at
  ``object_detector_mm`` from the detector: patient half-thickness + table/stand/grid gap. PA: 110 + 40 mm at
  1800 mm -> M = 1.091 (the usual 5-10 % for PA chest); lateral: 160 + 40 mm -> 1.125; AP bedside: 110 + 15 mm
  at 1000 mm -> 1.143.
* **Dose** - the detector's unattenuated air kerma follows from the entrance surface dose (EUR 16260 value,
  which includes backscatter; backscatter factor 1.35 for a chest field at 120 kV, typical of IAEA TRS-457
  tables) by the inverse-square law from the entrance plane (SAD - half-thickness) to the detector.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dxr_core.errors import OptionError

__all__ = ["ChestPreset", "DEFAULT_PRESET", "PRESETS", "PRESET_NAMES", "get_preset", "preset_geometry",
           "preset_physics", "preset_acquisition"]


@dataclass(frozen=True)
class ChestPreset:
    name: str
    view: str
    sid_mm: float
    object_detector_mm: float  # isocentre (patient mid-plane) to detector
    patient_half_thickness_mm: float
    detector_mm: float  # square field side
    pixel_pitch_mm: float
    kvp: float
    filtration_mm_al: float  # total Al filtration (inherent + added)
    filtration_mm_cu: float
    grid_ratio: float
    focal_spot_mm: float
    esd_mgy: float  # entrance surface dose (with backscatter)
    backscatter_factor: float
    reference: str

    @property
    def sad_mm(self) -> float:
        return self.sid_mm - self.object_detector_mm

    @property
    def magnification(self) -> float:
        return self.sid_mm / self.sad_mm

    @property
    def native_size(self) -> int:
        return int(round(self.detector_mm / self.pixel_pitch_mm))

    @property
    def detector_air_kerma_ugy(self) -> float:
        """Unattenuated air kerma at the detector (uGy): ESD / BSF, inverse square from the entrance plane."""
        entrance = self.sad_mm - self.patient_half_thickness_mm
        return 1000.0 * self.esd_mgy / self.backscatter_factor * (entrance / self.sid_mm) ** 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sad_mm": self.sad_mm, "magnification": self.magnification,
                               "native_size": self.native_size, "detector_air_kerma_ugy": self.detector_air_kerma_ugy}


PRESETS: dict[str, ChestPreset] = {
    "pa-chest": ChestPreset("pa-chest", "pa", 1800.0, 150.0, 110.0, 429.0, 0.143, 125.0, 3.5, 0.1, 10.0, 1.2, 0.3,
                            1.35, "EUR 16260 (1996) chest PA; IEC 60601-1-3 HVL; Samei & Flynn 2003 detector"),
    "lateral": ChestPreset("lateral", "lateral", 1800.0, 200.0, 160.0, 429.0, 0.143, 125.0, 3.5, 0.1, 10.0, 1.2, 1.5,
                           1.35, "EUR 16260 (1996) chest lateral; IEC 60601-1-3 HVL; Samei & Flynn 2003 detector"),
    "ap-portable": ChestPreset("ap-portable", "ap", 1000.0, 125.0, 110.0, 430.0, 0.16, 100.0, 3.5, 0.1, 6.0, 1.2,
                               0.3, 1.35, "typical bedside practice (SID 100 cm, 100 kV, 6:1 grid); EUR 16260 PA dose"),
}
PRESET_NAMES = tuple(PRESETS)
#: what `dxr drr`, the server's drr task, `dxr dataset` and the pipeline render unless told "none" (raw projection)
DEFAULT_PRESET = "pa-chest"


def get_preset(name: str | ChestPreset) -> ChestPreset:
    if isinstance(name, ChestPreset):
        return name
    key = str(name).lower().strip().replace("_", "-")
    if key not in PRESETS:
        raise OptionError(f"Unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
    return PRESETS[key]


def preset_geometry(volume, preset, size=None, pixel_spacing_mm=None, rotation_deg=0.0, isocenter_lps=None,
                    view: str | None = None, sid_mm: float | None = None, sad_mm: float | None = None):
    """Cone-beam geometry of the preset, isocentre at the volume centre. ``size`` (pixels; default the native
    matrix), ``pixel_spacing_mm`` (default: the preset's field divided by ``size``), ``view``, ``sid_mm`` and
    ``sad_mm`` (default: the preset's) may be overridden."""
    from dxr_core.drr.geometry import make_geometry

    p = get_preset(preset)
    if size is None:
        size = (p.native_size, p.native_size) if pixel_spacing_mm is None else None
    if size is None:
        ps = pixel_spacing_mm if not isinstance(pixel_spacing_mm, (int, float)) else (pixel_spacing_mm,) * 2
        size = (int(round(p.detector_mm / ps[0])), int(round(p.detector_mm / ps[1])))
    if isinstance(size, int):
        size = (size, size)
    if pixel_spacing_mm is None:
        pixel_spacing_mm = (p.detector_mm / size[0], p.detector_mm / size[1])
    return make_geometry(volume, view=view or p.view, sid_mm=sid_mm or p.sid_mm, sad_mm=sad_mm or p.sad_mm,
                         size=tuple(size),
                         pixel_spacing_mm=pixel_spacing_mm, rotation_deg=rotation_deg, isocenter_lps=isocenter_lps)


def preset_physics(preset, mode: str = "poly", kvp: float | None = None, photons_per_pixel: float | None = None,
                   energy_kev: float | None = None):
    """:class:`Physics` with the preset's tube voltage and filtration (``kvp`` overrides)."""
    from dxr_core.drr.physics import Physics

    p = get_preset(preset)
    kw: dict[str, Any] = {"mode": mode, "kvp": p.kvp if kvp is None else kvp, "filtration_mm_al": p.filtration_mm_al,
                          "filtration_mm_cu": p.filtration_mm_cu, "photons_per_pixel": photons_per_pixel}
    if energy_kev is not None:
        kw["energy_kev"] = energy_kev
    return Physics(**kw)


def preset_acquisition(preset, scatter: bool = True, grid_ratio: float | None = None, detector: bool = True,
                       processing: str = "default", focal_spot: bool = True):
    """:class:`~dxr_core.drr.acquisition.Acquisition` of the preset (every step on; each can be switched)."""
    from dxr_core.drr.acquisition import Acquisition, AntiScatterGrid, DetectorModel, Processing, ScatterModel

    p = get_preset(preset)
    return Acquisition(
        preset=p.name, scatter=ScatterModel(enabled=scatter),
        grid=AntiScatterGrid(p.grid_ratio if grid_ratio is None else grid_ratio),
        detector=DetectorModel(enabled=detector, pixel_pitch_mm=p.pixel_pitch_mm,
                               air_kerma_ugy=p.detector_air_kerma_ugy,
                               focal_spot_mm=p.focal_spot_mm if focal_spot else 0.0),
        processing=Processing(mode=processing))
