"""Air clipping (``Physics.air_hu``) and the NaN/inf check where rays read the volume.

Air clipping: along each CT row parallel to the detector rows (x for PA/AP, y for lateral), voxels outside
[first, last voxel above air_hu] count as 0; voxels inside that span keep their values. Checked against a numpy
reference (mask the converted volume, then integrate it with ``project``, which never clips), on the native kernel
and on the torch path, including detectors that see only part of each row (the span is still taken over the whole
row) and an air-filled trachea inside the body (kept: it lies inside the span).
"""
import json

import numpy as np
import pytest

from dxr_core.drr import Physics, hu_to_mu, make_geometry, project, render_drr
from dxr_core.drr import _ckernel, projector
from dxr_core.errors import InputError, OptionError
from dxr_core.volume import Volume

SHAPE = (40, 48, 56)  # z, y, x
SPACING = (1.8, 1.6, 2.2)  # x, y, z (mm)


def _ct(noise=10.0, seed=3):
    """Elliptic body (soft tissue) with lungs, an air-filled trachea and a bone block, in air at -1000 HU
    (+ Gaussian noise of ``noise`` HU, clipped to +-4 sigma, so air stays below -950 HU)."""
    z, y, x = SHAPE
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    body = (((xx - 27.5) / 24.0) ** 2 + ((yy - 23.5) / 19.0) ** 2 < 1) & (zz >= 5) & (zz < 36)
    lungs = ((((np.abs(xx - 27.5) - 11) / 8.0) ** 2 + ((yy - 21) / 11.0) ** 2) < 1) & body
    trachea = ((xx - 27.5) ** 2 + (yy - 23.5) ** 2 < 4.2 ** 2) & body
    a = np.where(body, 40.0, -1000.0).astype(np.float32)
    a[lungs] = -850.0
    a[trachea] = -1000.0  # air inside the body: below air_hu, kept because it is inside the span
    a[8:32, 34:39, 24:32] = 1100.0
    if noise:
        a += np.clip(rng.normal(0, noise, a.shape), -4 * noise, 4 * noise).astype(np.float32)
    return Volume(a, SPACING, (-60.0, -38.0, -44.0))


def _clip_axis(view):
    return 1 if view == "lateral" else 2  # rows along y (lateral) or x (PA/AP) in the (z, y, x) array


def _span_mask(hu, air, axis):
    keep = ~(hu <= air)
    fwd = np.cumsum(keep, axis=axis) > 0
    bwd = np.flip(np.cumsum(np.flip(keep, axis), axis=axis), axis) > 0
    return fwd & bwd


def _reference(v, g, air, view, energy=60.0):
    """numpy reference: mu from HU, voxels outside each row's body span set to 0, projected without clipping."""
    mu = hu_to_mu(v.array, energy).astype(np.float32)
    if air is not None:
        mu = np.where(_span_mask(v.array, air, _clip_axis(view)), mu, np.float32(0.0))
    return project(v.with_array(mu), g).astype(np.float64)


def _torch_path(monkeypatch):
    monkeypatch.setattr(_ckernel, "_LIB", None)
    monkeypatch.setattr(_ckernel, "_TRIED", True)


GEOMS = {"full": dict(size=(60, 64)), "centre": dict(size=(24, 8), pixel_spacing_mm=1.0)}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("view", ["pa", "ap", "lateral"])
@pytest.mark.parametrize("det", ["full", "centre"])
def test_air_clipping_matches_reference(native, view, det, monkeypatch):
    if native and _ckernel.load() is None:
        pytest.skip("no C compiler: native kernel unavailable")
    if not native:
        _torch_path(monkeypatch)
    v = _ct()
    g = make_geometry(v, view, **GEOMS[det])
    for air in (-950.0, None):
        d = render_drr(v, g, Physics(air_hu=air))
        ref = _reference(v, g, air, view)
        assert np.abs(d.line_integral - ref).max() <= 1e-5 * float(np.abs(ref).max()), (air, view, det)


def test_air_clipping_exact_when_air_is_exactly_minus_1000():
    v = _ct(noise=0.0)  # air (outside and trachea) exactly -1000 HU: converts to exactly 0 either way
    for view in ("pa", "lateral"):
        g = make_geometry(v, view, size=(60, 64))
        clipped = render_drr(v, g, Physics(air_hu=-950.0)).line_integral
        plain = render_drr(v, g, Physics(air_hu=None)).line_integral
        assert np.abs(clipped - plain).max() <= 1e-6 * float(plain.max())
        assert (clipped == 0).sum() > 0


@pytest.mark.parametrize("mode", ["mono", "poly"])
def test_noisy_air_bias_is_bounded(mode):
    """unclipped - clipped = the projection of the clipped air only, which is >= 0 and, since bilinear weights sum
    to <= 1 on each of the n_a planes crossed, <= n_a * step_max * mu_max with mu_max the largest converted value
    of a clipped voxel (<= mu_water * (1 + air_hu / 1000) = 0.05 mu_water) and step_max = plane spacing /
    cos(largest ray angle to the plane normal)."""
    v = _ct(noise=10.0)
    g = make_geometry(v, "pa", size=(60, 64))
    phys = Physics(mode=mode, air_hu=-950.0)
    clipped = render_drr(v, g, phys)
    plain = render_drr(v, g, Physics(mode=mode, air_hu=None))
    e = phys.effective_energy_kev
    mu = hu_to_mu(v.array, e)
    outside = ~_span_mask(v.array, -950.0, 2)
    mu_max = float(mu[outside].max())
    assert 0 < mu_max <= 0.05 * float(hu_to_mu(np.array([0.0]), e)[0]) * (1 + 1e-6)
    rows, cols = g.size
    half_diag = 0.5 * np.hypot(rows * g.pixel_spacing_mm[0], cols * g.pixel_spacing_mm[1])
    step_max = SPACING[1] * np.hypot(1.0, half_diag / g.sid_mm)  # PA: planes along y
    bound = SHAPE[1] * step_max * mu_max
    diff = plain.line_integral.astype(np.float64) - clipped.line_integral
    assert diff.min() >= -1e-5 * float(plain.line_integral.max())
    assert diff.max() <= bound
    assert diff.max() > 0.05 * bound  # the clamp-induced bias exists and is removed
    # rays through the CT's air only (beside the body, z outside the body): exactly 0 when clipped, a positive
    # clamp-induced bias when not
    assert ((clipped.line_integral == 0) & (plain.line_integral > 0)).sum() > 100


def test_air_hu_option_and_sidecar():
    assert Physics().air_hu == -950.0
    with pytest.raises(OptionError, match="air_hu"):
        Physics(air_hu=float("nan"))
    with pytest.raises(OptionError, match="air_hu"):
        Physics(air_hu="air")
    v = _ct()
    g = make_geometry(v, "pa", size=16)
    for air in (-950.0, -990.0, None):
        sc = render_drr(v, g, Physics(air_hu=air)).sidecar()
        json.dumps(sc)
        assert sc["physics"]["air_hu"] == air
        assert Physics.from_dict(sc["physics"]).air_hu == air


# --- NaN / inf: checked where rays read the volume (large volumes skip the full pre-check) -------------------

@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_voxel_on_a_ray_raises(native, bad, monkeypatch):
    if native and _ckernel.load() is None:
        pytest.skip("no C compiler: native kernel unavailable")
    if not native:
        _torch_path(monkeypatch)
    monkeypatch.setattr(projector, "_PRECHECK_MAX_VOXELS", 0)  # as for a large CT: no full pre-check
    v = _ct()
    a = v.array.copy()
    a[20, 24, 28] = bad  # centre of the body: every view reads it
    for view in ("pa", "lateral"):
        g = make_geometry(v, view, size=(32, 32))
        for phys in (Physics(), Physics(mode="poly"), Physics(air_hu=None)):
            with pytest.raises(InputError, match="NaN"):
                render_drr(v.with_array(a), g, phys)
        with pytest.raises(InputError, match="NaN"):
            project(v.with_array(a), g)
    a2 = v.array.copy()
    a2[20, 24, 1] = bad  # in the air outside the body, still on PA rays (clipped or not, it is read)
    with pytest.raises(InputError, match="NaN"):
        render_drr(v.with_array(a2), make_geometry(v, "pa", size=(32, 32)))


def test_nonfinite_voxel_no_ray_reads_is_ignored(monkeypatch):
    if _ckernel.load() is None:
        pytest.skip("no C compiler: native kernel unavailable")
    monkeypatch.setattr(projector, "_PRECHECK_MAX_VOXELS", 0)
    v = _ct()
    g = make_geometry(v, "pa", **GEOMS["centre"])  # sees only the central rows and columns
    a = v.array.copy()
    a[0, 0, 0] = np.nan
    a[39, 47, 55] = np.inf
    d = render_drr(v.with_array(a), g)
    assert np.isfinite(d.line_integral).all()
    assert np.array_equal(d.line_integral, render_drr(v, g).line_integral)
    # small volumes keep the full pre-check: the same voxels raise
    monkeypatch.setattr(projector, "_PRECHECK_MAX_VOXELS", 1 << 22)
    with pytest.raises(InputError, match="NaN"):
        render_drr(v.with_array(a), g)
