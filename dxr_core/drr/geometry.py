"""Cone-beam (point source, flat detector) projection geometry in DICOM patient LPS millimetres.

Conventions (all vectors in LPS, mm):

* ``source_lps`` is the focal spot. ``isocenter_lps`` (default: the CT volume centre) lies on the central ray
  at distance ``sad_mm`` from the source; the detector plane is perpendicular to the central ray at distance
  ``sid_mm`` from the source, and the central ray hits the *centre* of the pixel grid, i.e. the continuous
  pixel position ``((cols-1)/2, (rows-1)/2)``.
* Pixel centres sit at integer (col, row). Pixel (col c, row r) is at
  ``detector_origin_lps + c * col_spacing * row_direction + r * row_spacing * col_direction`` —
  DICOM naming: ``row_direction`` is the unit vector along a row (column index increases),
  ``col_direction`` the unit vector down a column (row index increases), ``pixel_spacing_mm`` is
  (row spacing, column spacing) = (spacing between rows, spacing between columns), as in DICOM PixelSpacing.
* ``projection_matrix`` (3x4) maps ``[x, y, z, 1]`` (LPS) to ``w * [col, row, 1]`` where ``w`` is the fraction
  of the source-to-detector distance at which the point lies along its ray (``w = 1`` on the detector plane,
  ``0 < w < 1`` between source and detector).

Views (before ``rotation_deg``), all displayed with the usual radiology orientation:

* ``"pa"``: source posterior (+y), detector anterior; row_direction = +x (patient Left), col_direction = -z
  (Feet): the patient's right is on the viewer's left, head at the top. ``patient_orientation == ("L", "F")``.
* ``"ap"``: source anterior (-y), detector posterior; displayed like a PA film (patient's right on the
  viewer's left): row_direction = +x (L), col_direction = -z (F).
* ``"lateral"`` (alias ``"llat"``, ``"left_lateral"``): the standard *left* lateral chest view — the patient's
  left side against the detector: source on the patient's right (-x), detector on the left (+x); displayed
  facing the viewer's left: row_direction = +y (Posterior, sternum on the left of the image, spine on the
  right), col_direction = -z (F). ``patient_orientation == ("P", "F")``.
* ``"rlat"`` (alias ``"right_lateral"``): source on the patient's left (+x), detector on the right (-x);
  row_direction = -y (Anterior), col_direction = -z (F).

``rotation_deg`` rotates the whole source-detector assembly rigidly about the isocenter. A scalar is a gantry
rotation about the patient's cranio-caudal (z, Superior) axis, right-handed in LPS (for PA, +90 deg brings the
source from posterior towards the patient's left). A 3-tuple ``(gantry, tilt, roll)`` adds a cranio-caudal tilt
about the patient's L-R (x) axis and a roll of the detector about the central ray, applied in the order roll,
tilt, gantry (R = Rz(gantry) @ Rx(tilt) @ R_ray(roll)).

Everything here is closed-form linear algebra (numpy); nothing in a library does exactly this mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from dxr_core.errors import GeometryError

__all__ = ["ConeBeamGeometry", "make_geometry", "VIEWS"]

# view -> (unit vector isocenter->source, row_direction, col_direction), LPS, before rotation
_VIEW_TABLE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = {
    "pa": ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "ap": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "lateral": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "rlat": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
_ALIASES = {"llat": "lateral", "left_lateral": "lateral", "lat": "lateral", "right_lateral": "rlat",
            "posteroanterior": "pa", "anteroposterior": "ap"}
VIEWS = tuple(_VIEW_TABLE) + tuple(_ALIASES)


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    """Right-handed rotation matrix about a unit axis (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    t = np.deg2rad(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _orientation_letter(v: np.ndarray) -> str:
    """DICOM patient-orientation letters for an LPS vector (dominant first, as in PatientOrientation)."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    order = np.argsort(-np.abs(v))
    out = ""
    for i in order:
        if abs(v[i]) > 1e-3:
            out += letters[i][1] if v[i] > 0 else letters[i][0]
    return out[:3] if out else "?"


@dataclass
class ConeBeamGeometry:
    """A point-source, flat-panel projection geometry. See the module docstring for every convention."""

    source_lps: np.ndarray
    detector_origin_lps: np.ndarray  # centre of pixel (row 0, col 0)
    row_direction: np.ndarray  # unit, along a row (col index increases)
    col_direction: np.ndarray  # unit, down a column (row index increases)
    pixel_spacing_mm: tuple[float, float]  # (row spacing, col spacing), DICOM order
    size: tuple[int, int]  # (rows, cols)
    sad_mm: float
    sid_mm: float
    view: str = "pa"
    isocenter_lps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("source_lps", "detector_origin_lps", "row_direction", "col_direction", "isocenter_lps"):
            v = np.asarray(getattr(self, name), dtype=np.float64).reshape(3)
            if not np.all(np.isfinite(v)):
                raise GeometryError(f"Geometry field {name}={v.tolist()} is not finite; give finite LPS coordinates.")
            setattr(self, name, v)
        self.pixel_spacing_mm = (float(self.pixel_spacing_mm[0]), float(self.pixel_spacing_mm[1]))
        self.size = (int(self.size[0]), int(self.size[1]))
        self.sad_mm = float(self.sad_mm)
        self.sid_mm = float(self.sid_mm)
        self.rotation_deg = tuple(float(a) for a in self.rotation_deg)  # type: ignore[assignment]
        _check_scalars(self.sad_mm, self.sid_mm, self.size, self.pixel_spacing_mm)
        for name in ("row_direction", "col_direction"):
            n = np.linalg.norm(getattr(self, name))
            if abs(n - 1.0) > 1e-6:
                raise GeometryError(f"{name} must be a unit vector (its length is {n:.6g}); normalise it.")
        if abs(float(self.row_direction @ self.col_direction)) > 1e-6:
            raise GeometryError("row_direction and col_direction must be perpendicular; fix the detector axes.")
        # the source must not lie in the detector plane
        dist = abs(float((self.source_lps - self.detector_origin_lps) @ self.normal))
        if dist < 1e-6:
            raise GeometryError("The source lies in the detector plane; move it (SID must be > 0).")

    # --- derived -------------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.size[0]

    @property
    def cols(self) -> int:
        return self.size[1]

    @property
    def normal(self) -> np.ndarray:
        """Unit detector normal pointing from the detector towards the source side."""
        n = np.cross(self.row_direction, self.col_direction)
        if float(n @ (self.source_lps - self.detector_origin_lps)) < 0:
            n = -n
        return n

    @property
    def detector_center_lps(self) -> np.ndarray:
        """LPS of the continuous pixel position ((cols-1)/2, (rows-1)/2)."""
        return self.pixel_to_world(np.array([[(self.cols - 1) / 2.0, (self.rows - 1) / 2.0]]))[0]

    @property
    def patient_orientation(self) -> tuple[str, str]:
        """DICOM PatientOrientation (direction of increasing column index, of increasing row index)."""
        return (_orientation_letter(self.row_direction), _orientation_letter(self.col_direction))

    @property
    def _basis(self) -> np.ndarray:
        """B = [u, v, D0 - S] with u, v the per-pixel step vectors; world pixel = S + B @ [c, r, 1]."""
        u = self.row_direction * self.pixel_spacing_mm[1]
        v = self.col_direction * self.pixel_spacing_mm[0]
        return np.stack([u, v, self.detector_origin_lps - self.source_lps], axis=1)

    @property
    def projection_matrix(self) -> np.ndarray:
        """(3, 4) P with P @ [x, y, z, 1] = w * [col, row, 1] (LPS mm -> pixel centres at integers)."""
        binv = np.linalg.inv(self._basis)
        return np.concatenate([binv, (-binv @ self.source_lps)[:, None]], axis=1)

    def project_points(self, lps: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm -> (N, 2) continuous (col, row) pixel coordinates (pixel centres at integers)."""
        p = np.asarray(lps, dtype=np.float64).reshape(-1, 3)
        h = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ self.projection_matrix.T
        if np.any(h[:, 2] <= 0):
            raise GeometryError("A point to project lies behind the X-ray source; it has no detector position.")
        return h[:, :2] / h[:, 2:3]

    def pixel_to_world(self, colrow: np.ndarray) -> np.ndarray:
        """(N, 2) continuous (col, row) -> (N, 3) LPS mm of that spot on the detector plane."""
        cr = np.asarray(colrow, dtype=np.float64).reshape(-1, 2)
        return (self.detector_origin_lps[None, :] + cr[:, :1] * self.pixel_spacing_mm[1] * self.row_direction
                + cr[:, 1:2] * self.pixel_spacing_mm[0] * self.col_direction)

    def with_size(self, size: tuple[int, int],
                  pixel_spacing_mm: tuple[float, float] | None = None) -> "ConeBeamGeometry":
        """Same source/detector plane/field of view centre, new pixel grid (keeps the detector centre fixed)."""
        rows, cols = int(size[0]), int(size[1])
        if pixel_spacing_mm is None:  # keep the physical detector size
            pixel_spacing_mm = (self.pixel_spacing_mm[0] * self.rows / rows,
                                self.pixel_spacing_mm[1] * self.cols / cols)
        _check_scalars(self.sad_mm, self.sid_mm, (rows, cols), pixel_spacing_mm)
        c = self.detector_center_lps
        origin = c - (cols - 1) / 2.0 * pixel_spacing_mm[1] * self.row_direction \
            - (rows - 1) / 2.0 * pixel_spacing_mm[0] * self.col_direction
        return ConeBeamGeometry(self.source_lps, origin, self.row_direction, self.col_direction,
                                tuple(pixel_spacing_mm), (rows, cols), self.sad_mm, self.sid_mm, self.view,
                                self.isocenter_lps, self.rotation_deg)

    # --- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cone_beam",
            "view": self.view,
            "source_lps": self.source_lps.tolist(),
            "detector_origin_lps": self.detector_origin_lps.tolist(),
            "row_direction": self.row_direction.tolist(),
            "col_direction": self.col_direction.tolist(),
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
            "size": list(self.size),
            "sad_mm": self.sad_mm,
            "sid_mm": self.sid_mm,
            "isocenter_lps": self.isocenter_lps.tolist(),
            "rotation_deg": list(self.rotation_deg),
            "patient_orientation": list(self.patient_orientation),
            "projection_matrix": self.projection_matrix.tolist(),
            "conventions": "LPS mm; projection_matrix @ [x,y,z,1] = w*[col,row,1], pixel centres at integers; "
                           "row_direction along a row (col increases), col_direction down a column; "
                           "pixel_spacing_mm = (row spacing, col spacing)",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConeBeamGeometry":
        try:
            return cls(
                source_lps=np.asarray(d["source_lps"], dtype=np.float64),
                detector_origin_lps=np.asarray(d["detector_origin_lps"], dtype=np.float64),
                row_direction=np.asarray(d["row_direction"], dtype=np.float64),
                col_direction=np.asarray(d["col_direction"], dtype=np.float64),
                pixel_spacing_mm=tuple(d["pixel_spacing_mm"]),
                size=tuple(d["size"]),
                sad_mm=d["sad_mm"],
                sid_mm=d["sid_mm"],
                view=d.get("view", "custom"),
                isocenter_lps=np.asarray(d.get("isocenter_lps", [0, 0, 0]), dtype=np.float64),
                rotation_deg=tuple(d.get("rotation_deg", (0.0, 0.0, 0.0))),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GeometryError(f"The geometry record is incomplete or malformed ({e}); "
                                "give a dict written by ConeBeamGeometry.to_dict().") from e


def _check_scalars(sad: float, sid: float, size: Sequence[int], spacing: Sequence[float]) -> None:
    if not (np.isfinite(sad) and sad > 0):
        raise GeometryError(f"SAD must be a positive number of mm, got {sad}; e.g. --sad 1000.")
    if not (np.isfinite(sid) and sid > 0):
        raise GeometryError(f"SID must be a positive number of mm, got {sid}; e.g. --sid 1500.")
    if sid <= sad:
        raise GeometryError(
            f"SID ({sid:g} mm) must be larger than SAD ({sad:g} mm): the detector has to be farther from the "
            "source than the isocenter; increase SID or decrease SAD.")
    if len(size) != 2 or any(int(s) != s or int(s) <= 0 for s in size):
        raise GeometryError("Detector size must be two positive whole numbers of pixels (rows, cols), "
                            f"got {tuple(size)}.")
    if len(spacing) != 2 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise GeometryError(f"Detector pixel spacing must be positive mm (row, col), got {tuple(spacing)}.")


def _rotation_matrix(rotation_deg: float | Sequence[float],
                     r0: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    if np.isscalar(rotation_deg):
        angles = (float(rotation_deg), 0.0, 0.0)  # type: ignore[arg-type]
    else:
        a = [float(x) for x in rotation_deg]  # type: ignore[union-attr]
        if len(a) > 3:
            raise GeometryError(f"rotation_deg takes at most 3 angles (gantry, tilt, roll), got {len(a)}.")
        angles = tuple(a + [0.0] * (3 - len(a)))  # type: ignore[assignment]
    if not all(np.isfinite(angles)):
        raise GeometryError(f"rotation_deg {angles} is not finite; give angles in degrees.")
    r = _rot(np.array([0.0, 0.0, 1.0]), angles[0]) @ _rot(np.array([1.0, 0.0, 0.0]), angles[1]) @ _rot(r0, angles[2])
    return r, angles  # type: ignore[return-value]


def make_geometry(volume, view: str = "pa", sid_mm: float = 1500.0, sad_mm: float = 1000.0,
                  size: tuple[int, int] | int = (512, 512), pixel_spacing_mm: float | tuple[float, float] | None = None,
                  rotation_deg: float | Sequence[float] = 0.0, isocenter_lps=None,
                  margin: float = 1.05) -> ConeBeamGeometry:
    """Build a cone-beam geometry for ``volume`` (a :class:`dxr_core.volume.Volume`, or ``None`` when
    ``isocenter_lps`` and ``pixel_spacing_mm`` are both given).

    ``size`` is (rows, cols) (an int means square). ``pixel_spacing_mm`` is the pixel pitch *at the detector*
    (a float for square pixels or (row, col) spacing); ``None`` picks the smallest square pitch whose detector
    shows the whole volume (all 8 grid corners) with ``margin`` (5 %) to spare. ``isocenter_lps`` defaults to the
    volume centre. See the module docstring for views and rotation.
    """
    key = str(view).lower().strip()
    key = _ALIASES.get(key, key)
    if key not in _VIEW_TABLE:
        raise GeometryError(f"Unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
    if np.isscalar(size):
        size = (int(size), int(size))  # type: ignore[arg-type]
    size_t = tuple(size)  # type: ignore[arg-type]
    if len(size_t) != 2 or any((not float(s).is_integer()) or s <= 0 for s in size_t):
        raise GeometryError(f"Detector size must be two positive whole numbers of pixels (rows, cols), got {size_t}.")
    rows, cols = int(size_t[0]), int(size_t[1])
    sad_mm, sid_mm = float(sad_mm), float(sid_mm)
    if pixel_spacing_mm is not None:
        ps = ((float(pixel_spacing_mm),) * 2 if np.isscalar(pixel_spacing_mm)  # type: ignore[union-attr,arg-type]
              else tuple(float(s) for s in pixel_spacing_mm))  # type: ignore[union-attr,arg-type]
    else:
        ps = (1.0, 1.0)
    _check_scalars(sad_mm, sid_mm, (rows, cols), ps)
    if isocenter_lps is None:
        if volume is None:
            raise GeometryError("Give a volume or an isocenter_lps to place the geometry.")
        iso = np.asarray(volume.center_lps, dtype=np.float64)
    else:
        iso = np.asarray(isocenter_lps, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(iso)):
            raise GeometryError(f"isocenter_lps {iso.tolist()} is not finite; give LPS mm.")

    to_src, rdir, cdir = (np.asarray(v, dtype=np.float64) for v in _VIEW_TABLE[key])
    r, angles = _rotation_matrix(rotation_deg, -to_src)
    to_src, rdir, cdir = r @ to_src, r @ rdir, r @ cdir
    source = iso + sad_mm * to_src
    center = source - sid_mm * to_src

    def build(spacing: tuple[float, float]) -> ConeBeamGeometry:
        origin = center - (cols - 1) / 2.0 * spacing[1] * rdir - (rows - 1) / 2.0 * spacing[0] * cdir
        return ConeBeamGeometry(source, origin, rdir, cdir, spacing, (rows, cols), sad_mm, sid_mm, key, iso, angles)

    if pixel_spacing_mm is None:
        if volume is None:
            raise GeometryError("pixel_spacing_mm=None needs a volume to fit the detector to; give one or a spacing.")
        g = build((1.0, 1.0))
        corners = volume.corners_lps()
        depth = (corners - source) @ (-to_src)
        if np.any(depth <= 1e-6):
            raise GeometryError("The X-ray source lies inside or beside the CT volume; increase SAD "
                                f"(now {sad_mm:g} mm) so the source is outside the patient.")
        cr = g.project_points(corners)
        half_c = np.max(np.abs(cr[:, 0] - (cols - 1) / 2.0)) + 0.5
        half_r = np.max(np.abs(cr[:, 1] - (rows - 1) / 2.0)) + 0.5
        s = float(max(half_c / (cols / 2.0), half_r / (rows / 2.0))) * float(margin)
        return build((s, s))
    return build(ps)  # type: ignore[arg-type]
