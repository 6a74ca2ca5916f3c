"""Nodule realism rules (issue 9): kind x shape, location, texture, CT blur, 2-D overlap, detectability.

Real CT: tests/data/lidc_idri_0006_small/, LIDC-IDRI-0006 block-averaged to 2.5 x 2.5 x 5 mm (LIDC-IDRI, CC BY 3.0,
Armato et al., Med Phys 2011, DOI 10.7937/K9/TCIA.2015.LO9QL9SX; see ATTRIBUTION.md there).
"""
from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np
import pytest

from dxr_core.errors import OptionError
from dxr_core.nodules.models import (
    CLEAR_GAP_MM,
    CONTACT_GAP_MM,
    IMPOSSIBLE,
    KIND_PRIOR,
    KINDS,
    LOCATION_MIX,
    TEXTURE,
    LungDistance,
    Nodule,
    check_inside_lung,
    ct_psf_sigma_mm,
    joint_distribution,
    nodule_patch,
    random_nodules,
)
from dxr_core.nodules.observer import background_nps, npw_dprime
from dxr_core.volume import Volume

SAMPLE = Path(__file__).parent / "data" / "lidc_idri_0006_small" / "lidc_idri_0006_small.nrrd"


@pytest.fixture(scope="module")
def ct():
    from dxr_core.io.ct import read_ct

    return read_ct(SAMPLE)


@pytest.fixture(scope="module")
def lung(ct):
    return LungDistance(ct)


@pytest.fixture(scope="module")
def many(ct, lung):
    """300 random nodules (5 seeds x 60, overlap allowed so the draws are not conditioned on crowding)."""
    out = []
    for s in range(5):
        out += random_nodules(ct, 60, seed=100 + s, lung=lung, diameter_range=(4.0, 8.0), avoid_overlap=False)
    return out


# ---- kind x shape ------------------------------------------------------------------------------------------------
def test_joint_distribution_has_no_impossible_pairs_and_is_normalised():
    j = joint_distribution()
    assert sum(j.values()) == pytest.approx(1.0)
    assert not set(j) & set(IMPOSSIBLE)
    assert {s for (k, s) in j if k == "calcified"} == {"sphere", "ellipsoid"}
    assert ("ggo", "spiculated") not in j and ("solid", "spiculated") in j and ("part_solid", "spiculated") in j
    # marginal of kinds = the prior
    for k in KINDS:
        assert sum(p for (kk, _), p in j.items() if kk == k) == pytest.approx(KIND_PRIOR[k])
    pf = joint_distribution(location="perifissural")
    assert set(pf) == {("solid", "ellipsoid"), ("solid", "sphere")}


def test_impossible_requests_raise_option_error(ct, lung):
    for kind, shape in IMPOSSIBLE:
        with pytest.raises(OptionError, match="does not occur"):
            Nodule(kind=kind, shape=shape)
    with pytest.raises(OptionError, match="No nodule can be both"):
        random_nodules(ct, 1, kinds=["calcified"], shapes=["spiculated", "lobulated"], lung=lung)
    with pytest.raises(OptionError, match="Perifissural nodules are solid"):
        random_nodules(ct, 1, kinds=["ggo"], location="perifissural", lung=lung)
    with pytest.raises(OptionError, match="location"):
        random_nodules(ct, 1, location="mediastinal", lung=lung)
    # a partly possible request only draws the possible pairs
    nods = random_nodules(ct, 12, seed=4, kinds=["calcified", "solid"], shapes=["spiculated", "sphere"], lung=lung,
                          avoid_overlap=False)
    assert all((n.kind, n.shape) not in IMPOSSIBLE for n in nods)
    assert {(n.kind, n.shape) for n in nods if n.kind == "calcified"} <= {("calcified", "sphere")}


def test_drawn_kinds_shapes_and_locations_follow_the_documented_mix(many):
    n = len(many)
    assert not any((x.kind, x.shape) in IMPOSSIBLE for x in many)
    kinds = collections.Counter(x.kind for x in many)
    locs = collections.Counter(x.location for x in many)
    # binomial 4-sigma bands around the documented probabilities (300 draws)
    # overall kind mix = sum over locations of mix x P(kind | location) (perifissural nodules are all solid)
    marg = collections.Counter()
    for loc, w in LOCATION_MIX.items():
        for (k, _), p in joint_distribution(location=loc).items():
            marg[k] += w * p
    assert marg["solid"] == pytest.approx(0.8 * KIND_PRIOR["solid"] + 0.2)
    for k, p in marg.items():
        assert abs(kinds[k] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (k, kinds, marg)
    for loc, p in LOCATION_MIX.items():
        assert abs(locs[loc] / n - p) < 4 * math.sqrt(p * (1 - p) / n), (loc, locs)
    spic = [x.kind for x in many if x.shape == "spiculated"]
    assert spic and set(spic) <= {"solid", "part_solid"}


# ---- location ------------------------------------------------------------------------------------------------------
def test_locations_touch_pleura_or_fissure_as_asked(ct, lung, many):
    for x in many:
        pl, fi = x.placement["pleura_gap_mm"], x.placement["fissure_gap_mm"]
        assert pl >= 0  # never through the pleura
        if x.location == "juxtapleural":
            assert pl <= CONTACT_GAP_MM
        elif x.location == "perifissural":
            assert 0 <= fi <= CONTACT_GAP_MM and x.kind == "solid" and x.shape in ("sphere", "ellipsoid")
            assert x.diameter_mm <= 10.0
        else:
            assert pl >= CLEAR_GAP_MM and fi >= CLEAR_GAP_MM
        check_inside_lung(x, lung)
    # the default pleural margin no longer forbids juxtapleural nodules: some sit within 1.5 mm of the pleura
    assert sum(x.placement["pleura_gap_mm"] <= CONTACT_GAP_MM for x in many) >= 0.2 * len(many)
    # perifissural ellipsoids are lentiform, flat against the fissure: short axis along the fissure normal, surface
    # within the contact gap of it, not across it
    from dxr_core.nodules.models import fissure_distance, fissure_normal

    pf = [x for x in many if x.location == "perifissural" and x.shape == "ellipsoid"]
    assert len(pf) >= 10
    for x in pf:
        nrm = fissure_normal(x.center_lps, lung.fissure_params)
        assert abs(float(np.dot(nrm, x.short_axis_lps))) > 0.999
        assert x.half_thickness_mm < 0.75 * x.radius_mm
        g = np.mgrid[-1:1:15j, -1:1:15j, -1:1:15j].reshape(3, -1).T * x.extent_mm + np.asarray(x.center_lps)
        g = g[x.contains(g)]
        side = (g - np.asarray(x.center_lps)) @ nrm
        fd = fissure_distance(g, lung.fissure_params)
        assert fd.min() <= CONTACT_GAP_MM + 0.5
        near = fd < 0.5
        assert not near.any() or (np.sign(side[near]) == np.sign(side[near][0])).all()
    one = random_nodules(ct, 5, seed=1, lung=lung, location="juxtapleural")
    assert all(x.location == "juxtapleural" and x.placement["pleura_gap_mm"] <= CONTACT_GAP_MM for x in one)


def test_fissure_model_is_oblique_and_horizontal_on_the_right(lung):
    prm = {p["side"]: p for p in lung.fissure_params}
    assert set(prm) == {"left", "right"}
    for p in prm.values():
        ny, nz = p["n"]
        # oblique fissure: posterior-superior to anterior-inferior (normal has y and z of opposite sign) at 30-60
        # degrees from the horizontal
        assert ny * nz < 0 and 30 < math.degrees(math.atan2(abs(ny), abs(nz))) < 60
    assert "zh" in prm["right"] and "zh" not in prm["left"]
    fd = lung.fissure_dist[lung.dist > 0]
    assert np.isfinite(fd).all() and (fd < 2.0).sum() > 100  # a fissure surface crosses each lung


# ---- texture and CT blur -------------------------------------------------------------------------------------------
def _lung_block(spacing=(0.7, 0.7, 1.25), thickness=None):
    n = (int(40 / spacing[2]), int(40 / spacing[1]), int(40 / spacing[0]))
    v = Volume(np.full(n, -850.0, np.float32), spacing=spacing, origin=tuple(-20.0 + s / 2 for s in spacing))
    if thickness is not None:
        v.meta["dicom"] = {"SliceThickness": str(thickness)}
    return v


def test_texture_is_seeded_correlated_and_within_the_kind_range():
    v = _lung_block()
    c = (0.0, 0.0, 0.0)

    def core_values(**kw):
        n = Nodule(center_lps=c, diameter_mm=20.0, **kw)
        sl, new, frac = nodule_patch(v, n)
        lo = np.array([sl[2].start, sl[1].start, sl[0].start], float)
        kk, jj, ii = np.meshgrid(*[np.arange(k) for k in new.shape], indexing="ij")
        pts = v.index_to_world(np.stack([ii.ravel() + lo[0], jj.ravel() + lo[1], kk.ravel() + lo[2]], -1))
        deep = (np.linalg.norm(pts - np.asarray(c), axis=1) < 10.0 - 3.0).reshape(new.shape)  # 3 mm inside
        return new[deep], new

    a, pa = core_values(kind="solid", seed=3)
    b, pb = core_values(kind="solid", seed=3)
    _, pc = core_values(kind="solid", seed=4)
    assert np.array_equal(pa, pb) and not np.array_equal(pa, pc)
    flat, _ = core_values(kind="solid", seed=3, texture=False, blur=False)
    assert np.ptp(flat) < 1e-3
    amp = TEXTURE["solid"][0]
    assert 0.5 * amp < a.std() < 1.2 * amp and abs(a.mean() - 40.0) < 0.3 * amp
    g, _ = core_values(kind="ggo", seed=3)
    assert g.max() <= -600.0 + 1e-3 and g.std() > 0.4 * TEXTURE["ggo"][0]
    # correlated: neighbouring voxels agree more than white noise would
    _, pt = core_values(kind="solid", seed=3, blur=False)
    inner = pt[8:-8, 8:-8, 8:-8] - 40.0
    r = np.corrcoef(inner[:, :, 1:].ravel(), inner[:, :, :-1].ravel())[0, 1]
    assert r > 0.5


def _edge_width_10_90(profile, x):
    p = (profile - profile.min()) / np.ptp(profile)
    if p[0] > p[-1]:
        p, x = p[::-1], x[::-1]
    return abs(np.interp(0.9, p, x) - np.interp(0.1, p, x))


def test_inserted_nodule_is_blurred_by_the_ct_psf():
    v = _lung_block(thickness=2.5)
    sig = ct_psf_sigma_mm(v)
    sp = np.asarray(v.spacing)
    # total PSF = voxel box (sp/sqrt 12) (+) extra Gaussian: in-plane 0.47 mm kernel, z: FWHM = SliceThickness
    assert np.sqrt(sig**2 + sp**2 / 12) == pytest.approx([0.47, 0.47, 2.5 / 2.3548], rel=1e-3)
    n = dict(kind="calcified", diameter_mm=24.0, center_lps=(0.0, 0.0, 0.0), texture=False)
    sl, sharp, _ = nodule_patch(v, Nodule(blur=False, **n))
    sl2, soft, _ = nodule_patch(v, Nodule(**n))
    base = np.full_like(soft, -850.0)
    # blur conserves the inserted HU x volume
    z0 = sl2[0].start - sl[0].start
    assert (soft - base).sum() == pytest.approx((sharp - (-850.0)).sum(), rel=1e-3)
    # z edge: 10-90 % width of the blurred edge ~ 2.563 x total z sigma (sphere curvature adds a little)
    cz, cy, cx = (s // 2 for s in soft.shape)
    zs = (np.arange(soft.shape[0]) - cz) * sp[2]
    w_soft = _edge_width_10_90(soft[cz:, cy, cx], zs[cz:])
    w_sharp = _edge_width_10_90(sharp[sharp.shape[0] // 2:, sharp.shape[1] // 2, sharp.shape[2] // 2],
                                (np.arange(sharp.shape[0] - sharp.shape[0] // 2)) * sp[2])
    assert w_soft > w_sharp
    assert w_soft == pytest.approx(2.563 * 2.5 / 2.3548, rel=0.3)
    assert z0 < 0  # the blurred patch is padded beyond the sharp one


# ---- 2-D overlap and 100 nodules on the real CT -------------------------------------------------------------------
def _boxes(geo, nods):
    from dxr_core.nodules.labels import projected_mask

    out = []
    for n in nods:
        m, (r0, r1, c0, c1), _ = projected_mask(geo, n)
        ys, xs = np.nonzero(m)
        out.append((c0 + xs.min(), r0 + ys.min(), c0 + xs.max(), r0 + ys.max()))  # inclusive pixel box
    return out


def _n_overlaps(boxes):
    n = 0
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            n += a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
    return n


def test_100_random_nodules_inside_the_lungs_without_overlapping_boxes(ct, lung):
    from dxr_core.drr import make_geometry
    from dxr_core.nodules import lung_mask

    nods = random_nodules(ct, 100, seed=11, lung=lung, diameter_range=(4.0, 12.0))
    assert len(nods) == 100
    mask = lung_mask(ct)  # the lung mask derived from the CT (independent of the placement's coarse grid)
    for n in nods:
        r = n.body_extent_mm
        g = np.mgrid[-1:1:7j, -1:1:7j, -1:1:7j].reshape(3, -1).T * r + np.asarray(n.center_lps)
        g = g[np.linalg.norm(g - np.asarray(n.center_lps), axis=1) <= r]
        idx = np.round(ct.world_to_index(g)).astype(int)
        assert mask[idx[:, 2], idx[:, 1], idx[:, 0]].all(), n
    # no overlapping label boxes in frontal views: the default PA, a PA chest geometry (SID 1800, SAD 1700) and AP
    for geo in (make_geometry(ct, view="pa", size=(384, 384)),
                make_geometry(ct, view="pa", sid_mm=1800.0, sad_mm=1700.0, size=(512, 512)),
                make_geometry(ct, view="ap", size=(384, 384))):
        assert _n_overlaps(_boxes(geo, nods)) == 0
    assert sum(n.placement["rejected"]["overlap_2d"] for n in nods) > 0  # overlap was avoided, and recorded
    # asked to allow it, the same draw overlaps
    free = random_nodules(ct, 100, seed=11, lung=lung, diameter_range=(4.0, 12.0), avoid_overlap=False)
    assert _n_overlaps(_boxes(make_geometry(ct, view="pa", size=(384, 384)), free)) > 0
    assert all(n.placement["overlap_avoided"] == "no" for n in free)


def test_overlap_in_a_given_geometry_and_recorded_in_labels(ct, lung):
    from dxr_core.drr import Physics, make_geometry, render_drr
    from dxr_core.nodules import add_nodules_to_drr

    geo = make_geometry(ct, view="lateral", size=(160, 160))
    nods = random_nodules(ct, 12, seed=5, lung=lung, diameter_range=(6.0, 14.0), geometry=geo)
    assert _n_overlaps(_boxes(geo, nods)) == 0
    drr = render_drr(ct, geo, Physics(mode="mono"))
    a = Nodule(kind="solid", diameter_mm=10.0, center_lps=nods[0].center_lps)
    c = np.asarray(nods[0].center_lps) + np.array([6.0, 0.0, 0.0])  # behind it in a lateral view
    b = Nodule(kind="solid", diameter_mm=6.0, center_lps=c)
    _, _, labs = add_nodules_to_drr(drr, ct, [a, b], seed=0)
    assert labs[0]["overlaps"] == [1] and labs[1]["overlaps"] == [0]


# ---- detectability ---------------------------------------------------------------------------------------------------
def _power_law_nps(n, beta, var=1.0):
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    P = 1.0 / np.maximum(f, 1.0 / n) ** beta
    return P * var / P.mean()


def _disc(n, r, amp=1.0):
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2
    return amp * (np.hypot(x, y) <= r).astype(np.float64)


def test_npw_dprime_matches_monte_carlo_and_white_noise():
    rng = np.random.default_rng(0)
    n = 48
    s = _disc(n, 5, 0.08)
    assert npw_dprime(s, None, sigma_white=0.5) == pytest.approx(np.sqrt((s * s).sum()) / 0.5)
    P = _power_law_nps(n, 3.0, var=0.04)
    # Monte Carlo NPW observer (template = s) in circulant noise of NPS P
    w = rng.normal(size=(4000, n, n))
    noise = np.real(np.fft.ifft2(np.fft.fft2(w) * np.sqrt(P)))
    t0 = (noise * s).sum(axis=(1, 2))
    t1 = ((noise + s) * s).sum(axis=(1, 2))
    d_mc = (t1.mean() - t0.mean()) / np.sqrt(0.5 * (t1.var() + t0.var()))
    assert npw_dprime(s, P) == pytest.approx(d_mc, rel=0.06)
    # NPS estimated from a single background region (Hann-windowed periodogram), power-law beta = 1.5: d' within 25 %
    P = _power_law_nps(n, 1.5, var=0.04)
    noise = np.real(np.fft.ifft2(np.fft.fft2(w[:40]) * np.sqrt(P)))
    est = [npw_dprime(s, background_nps(noise[i], detrend=False)) for i in range(40)]
    assert np.median(est) == pytest.approx(npw_dprime(s, P), rel=0.25)
    # white noise: the estimator gives sigma^2 on average; the quadratic detrend removes a smooth background
    white = rng.normal(0, 0.3, size=(64, 64))
    assert background_nps(white, detrend=False).mean() == pytest.approx(0.09, rel=0.1)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    trend = 2.0 * xx + 1.5 * yy**2 - xx * yy
    assert background_nps(white + trend).mean() == pytest.approx(0.09, rel=0.15)
    assert background_nps(white + trend, detrend=False).mean() > 1.5 * 0.09


def test_detectability_grows_with_size_and_density_on_the_real_ct(ct, lung):
    from dxr_core.drr import Physics, make_geometry, render_drr
    from dxr_core.nodules import add_nodules_to_drr

    cells = np.argwhere(lung.dist >= 17.0)
    c = ct.index_to_world(lung.cell_center_index(cells[len(cells) // 2][None]))[0]
    geo = make_geometry(ct, view="pa", size=(256, 256))
    base = render_drr(ct, geo, Physics(mode="mono"))

    def lab(**kw):
        return add_nodules_to_drr(base, ct, [Nodule(center_lps=c, **kw)], seed=0)[2][0]

    by_d = [lab(kind="solid", diameter_mm=d) for d in (5.0, 10.0, 20.0)]
    assert all(np.diff([x["detectability"] for x in by_d]) > 0), [x["detectability"] for x in by_d]
    assert all("visibility" in x and "contrast" in x for x in by_d)  # the CNR fields are kept
    ggo = lab(kind="ggo", diameter_mm=10.0)
    assert 0 < ggo["detectability"] < by_d[1]["detectability"]
    assert lab(kind="calcified", diameter_mm=10.0)["detectability"] > by_d[1]["detectability"]


def test_dxr_drr_nodule_location_overlap_and_impossible_pair(tmp_path, capsys):
    import json

    from dxr_core.cli import main

    out = tmp_path / "o"
    base = ["drr", "--ct", str(SAMPLE), "--out", str(out), "--size", "96", "--formats", "png,json", "--nodules", "3"]
    assert main(base + ["--nodule-location", "juxtapleural", "--nodule-overlap"]) == 0
    coco = json.loads((out / "lidc_idri_0006_small.coco.json").read_text())
    assert [a["location"] for a in coco["annotations"]] == ["juxtapleural"] * 3
    assert all("detectability" in a and "overlaps" in a for a in coco["annotations"])
    side = json.loads((out / "lidc_idri_0006_small.json").read_text())
    assert all(n["location"] == "juxtapleural" for n in side["nodules"])
    capsys.readouterr()
    assert main(base + ["--nodule-kinds", "ggo", "--nodule-shapes", "spiculated", "--force"]) == 2
    assert "not spiculated" in capsys.readouterr().err
