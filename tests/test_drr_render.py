"""render_drr physics, determinism, sidecar, and add_volume_delta (exact vs full re-render, fast)."""
import json

import numpy as np
import pytest

from dxr_core.drr import Physics, add_volume_delta, hu_to_mu, make_geometry, render_drr
from dxr_core.drr.physics import hu_bone_reference, mu_bone, mu_water
from dxr_core.volume import Volume


def _ct():
    a = np.full((50, 64, 72), -1000.0, np.float32)
    a[8:42, 10:54, 8:64] = 0.0
    a[15:35, 20:44, 14:30] = -800.0  # lung
    a[10:40, 40:48, 32:40] = 1200.0  # spine-ish bone
    return Volume(a, (2.0, 2.0, 2.5), (-72.0, -64.0, -60.0), meta={"PatientID": "P1", "Modality": "CT"})


def test_coefficients():
    assert np.isclose(mu_water(60.0)[0], 0.02059, rtol=0.02)  # NIST XCOM water at 60 keV: 0.2059 cm^2/g
    assert 0.05 < mu_bone(60.0)[0] < 0.07
    assert 1500 < hu_bone_reference(70.0) < 2500
    mu = hu_to_mu(np.array([-1000.0, 0.0, hu_bone_reference(70.0)]), 60.0)
    assert np.allclose(mu, [0.0, mu_water(60.0)[0], mu_bone(60.0)[0]], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["mono", "poly"])
def test_render_and_noise(mode):
    v = _ct()
    g = make_geometry(v, "pa", size=(64, 64))
    d = render_drr(v, g, Physics(mode=mode), seed=0)
    assert d.image.dtype == np.float32 and d.image.shape == (64, 64)
    assert 0.0 <= d.image.min() and d.image.max() <= 1.0
    # bone bright: the spine column is brighter than the lungs
    spine = g.project_points(v.index_to_world(np.array([[36, 44, 25]], float)))[0].round().astype(int)
    lung = g.project_points(v.index_to_world(np.array([[22, 30, 25]], float)))[0].round().astype(int)
    assert d.image[spine[1], spine[0]] > d.image[lung[1], lung[0]]
    sc = d.sidecar()
    json.dumps(sc)
    assert np.allclose(np.array(sc["projection_matrix"]), g.projection_matrix)
    assert sc["physics"]["window"] == list(d.physics.window) and sc["source"]["PatientID"] == "P1"
    if mode == "poly":
        assert d.basis is not None and d.basis.shape == (2, 64, 64)
    noisy = Physics(mode=mode, photons_per_pixel=1e4)
    a1, a2 = render_drr(v, g, noisy, seed=5), render_drr(v, g, noisy, seed=5)
    a3 = render_drr(v, g, noisy, seed=6)
    assert np.array_equal(a1.image, a2.image) and not np.array_equal(a1.image, a3.image)
    assert np.abs(a1.image - d.image).mean() < 0.02


@pytest.mark.parametrize("mode", ["mono", "poly"])
def test_add_volume_delta_matches_full_render(mode):
    v = _ct()
    g = make_geometry(v, "pa", size=(96, 96), rotation_deg=(8.0, 4.0, 0.0))
    phys = Physics(mode=mode)
    base = render_drr(v, g, phys)
    delta = np.zeros((10, 12, 12), np.float32)
    zz, yy, xx = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in delta.shape), indexing="ij")
    delta[(xx / 5) ** 2 + (yy / 5) ** 2 + (zz / 4) ** 2 <= 1] = 850.0  # lung nodule: -800 -> +50 HU
    dv = Volume(delta, v.spacing, v.index_to_world(np.array([18.0, 26.0, 20.0])), v.direction)
    upd = add_volume_delta(base, dv, seed=1)
    a2 = v.array.copy()
    a2[20:30, 26:38, 18:30] += delta
    full = render_drr(v.with_array(a2), g, phys)
    assert np.abs(upd.line_integral - full.line_integral).max() < 1e-4
    assert np.abs(upd.image - full.image).max() < 1e-4
    assert np.abs(upd.image - base.image).max() > 0.01  # the nodule is visible
    assert not np.shares_memory(upd.image, base.image)


def test_add_volume_delta_retraces_only_its_box_512():
    """Adding a nodule-sized delta re-traces only its projected box (its cost is timed in bench/nodule_speed.py)."""
    v = _ct()
    g = make_geometry(v, "pa", size=(512, 512))
    base = render_drr(v, g, Physics(mode="poly"))
    delta = np.zeros((12, 16, 16), np.float32)
    delta[2:10, 3:13, 3:13] = 850.0
    dv = Volume(delta, v.spacing, v.index_to_world(np.array([18.0, 26.0, 20.0])), v.direction)
    upd = add_volume_delta(base, dv, seed=0)
    r0, r1, c0, c1 = upd.meta["volume_deltas"][-1]["pixel_box"]
    assert (r1 - r0) * (c1 - c0) < 0.05 * 512 * 512  # a small box, not the whole detector
    outside = np.ones((512, 512), bool)
    outside[r0:r1, c0:c1] = False
    assert np.array_equal(upd.image[outside], base.image[outside])
    assert np.abs(upd.image[r0:r1, c0:c1] - base.image[r0:r1, c0:c1]).max() > 0.01
