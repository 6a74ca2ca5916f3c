"""Phantom: analytic anatomy, voxelisation at any spacing (partial volume), CT effects, DICOM and CLI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dxr_core.errors import OptionError
from dxr_core.phantom import CTEffects, build_chest, make_chest_phantom
from dxr_core.phantom.primitives import Layer, SuperEllipsoid, Tube
from dxr_core.phantom.voxelize import voxelize

# a 120 mm cube through the right hilum: vessels, bronchi, ribs, lung edge, heart border
FOV = (120.0, 120.0, 120.0)
CENTER = (-75.0, 10.0, -10.0)


def _drr(vol, geo):
    from dxr_core.drr import Physics, render_drr

    return render_drr(vol, geo, Physics(mode="mono", energy_kev=60.0)).image.astype(np.float64)


def _hf_energy(img):
    f = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    h, w = img.shape
    yy, xx = np.mgrid[-h // 2 : h - h // 2, -w // 2 : w - w // 2]
    r = np.hypot(yy / h, xx / w)
    return float(f[r > 0.2].sum())


@pytest.mark.parametrize(
    "fine_sp, coarse_sp, fov, px, hf_ratio",
    [
        (1.25, (2.5, 2.5, 5.0), FOV, 1.5, 1.5),  # 120 mm cube, 1.25 mm iso vs 2.5 x 2.5 x 5 mm
        (0.5, (0.7, 0.7, 5.0), (70.0, 70.0, 70.0), 0.6, 1.05),  # 70 mm cube, 0.5 mm iso vs 0.7 x 0.7 x 5 mm
    ],
)
def test_fine_and_coarse_voxelisations_differ_by_blur_only(fine_sp, coarse_sp, fov, px, hf_ratio):
    from dxr_core.drr import make_geometry

    fine = make_chest_phantom(3, spacing_mm=fine_sp, fov_mm=fov, center_lps=CENTER)
    coarse = make_chest_phantom(3, spacing_mm=coarse_sp, fov_mm=fov, center_lps=CENTER)
    assert np.allclose(fine.center_lps, coarse.center_lps, atol=1e-6)
    n = int(round(fov[0] * 1.5 / px * 1.05))
    geo = make_geometry(fine, view="pa", size=(n, n), pixel_spacing_mm=px, isocenter_lps=CENTER)
    a, b = _drr(fine, geo), _drr(coarse, geo)
    assert _hf_energy(a) > hf_ratio * _hf_energy(b)  # the fine one keeps more high-frequency energy
    # blur the fine DRR to the coarse resolution: box voxel + linear interpolation ~ sigma 0.5 voxel, magnified
    mag = geo.sid_mm / geo.sad_mm
    fs = np.broadcast_to(np.asarray(fine_sp, float), (3,))
    sig = lambda wc, wf: np.sqrt(max((0.5 * wc) ** 2 - (0.5 * wf) ** 2, 0.0)) * mag / px  # noqa: E731
    blurred = ndimage.gaussian_filter(a, (sig(coarse_sp[2], fs[2]), sig(coarse_sp[0], fs[0])), mode="nearest")
    m = n // 8  # ignore the cube's own edges
    mse = np.mean((blurred[m:-m, m:-m] - b[m:-m, m:-m]) ** 2)
    psnr = 10 * np.log10(1.0 / mse)
    assert psnr >= 35.0, psnr
    raw = 10 * np.log10(1.0 / np.mean((a[m:-m, m:-m] - b[m:-m, m:-m]) ** 2))
    assert psnr > raw + 3.0  # blurring is what made them agree


def test_partial_volume_matches_analytic_volume():
    ball = SuperEllipsoid([0.3, -0.2, 0.1], [7.0, 5.0, 6.0])
    tube = Tube([[-8, -8, -8], [8, 6, 8]], [1.2, 0.8])
    for sp in ((0.5, 0.5, 0.5), (0.7, 0.7, 5.0), (2.0, 2.0, 2.0)):
        n = np.ceil(np.array([30.0, 30.0, 30.0]) / sp).astype(int)
        org = -(n - 1) / 2 * np.asarray(sp)
        a = voxelize([Layer("ball", ball, 1.0)], sp, n, org, background_hu=0.0)
        assert a.sum() * np.prod(sp) == pytest.approx(4 / 3 * np.pi * 7 * 5 * 6, rel=0.01)
        t = voxelize([Layer("tube", tube, 1.0)], sp, n, org, background_hu=0.0)
        length = np.linalg.norm([16, 14, 16])
        expect = np.pi / 3 * length * (1.2**2 + 1.2 * 0.8 + 0.8**2)  # frustum (+ small end caps)
        assert t.sum() * np.prod(sp) == pytest.approx(expect, rel=0.08)


def test_phantom_anatomy_hu_and_orientation():
    v = make_chest_phantom(0, spacing_mm=4.0)
    assert v.array.dtype == np.float32 and np.allclose(v.direction, np.eye(3))
    ijk = lambda p: tuple(np.round(v.world_to_index(np.asarray(p, float)[None])[0]).astype(int)[::-1])  # noqa: E731
    m = build_chest(0)
    lung_c = m.lungs[1].center  # left lung is at +x (patient left)
    assert lung_c[0] > 0 and -900 <= v.array[ijk(lung_c + [0, 0, 40])] <= -700
    spine = v.array[ijk([0.0, 52.0 * m.params["depth_scale"], 0.0])]
    assert spine > 150  # vertebral body (posterior, +y)
    assert v.array[0, 0, 0] == -1000.0  # air outside the body
    heart_z = m.params["dome_right_z"] + 45
    assert -20 <= v.array[ijk([20.0, -28.0, heart_z])] <= 80  # heart (anterior, -y, left)


def test_seeds_vary_and_repeat():
    a = build_chest(1).params
    b = build_chest(2).params
    from dxr_core.phantom.anatomy import _build_chest

    assert a != b and _build_chest(1, False).params == a  # rebuilt, not the cached model
    assert a["n_vessel_segments"] > 300
    v1 = make_chest_phantom(1, spacing_mm=6.0)
    assert np.array_equal(v1.array, make_chest_phantom(1, spacing_mm=6.0).array)


def test_ct_effects_are_seeded_and_bad_options_raise():
    fx = CTEffects(slice_thickness_mm=5.0, kernel="soft", dose_mAs=50.0, seed=4)
    a = make_chest_phantom(0, spacing_mm=6.0, ct_effects=fx)
    b = make_chest_phantom(0, spacing_mm=6.0, ct_effects=fx)
    clean = make_chest_phantom(0, spacing_mm=6.0)
    assert np.array_equal(a.array, b.array)
    air = (clean.array == -1000.0)
    assert 10 < float(a.array[air].std()) < 60  # noise around 24 HU (50 mAs, 5 mm)
    with pytest.raises(OptionError):
        make_chest_phantom(0, spacing_mm=(1.0, -1.0, 1.0))
    with pytest.raises(OptionError):
        make_chest_phantom(0, spacing_mm=6.0, ct_effects=CTEffects(kernel="bogus"))
