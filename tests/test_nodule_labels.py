"""Nodules: lung mask, placement, insertion, projected labels, visibility, COCO, and `dxr drr --nodules`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dxr_core.errors import InputError, OptionError
from dxr_core.nodules import (
    LungDistance,
    Nodule,
    add_nodules_to_drr,
    check_inside_lung,
    insert_nodules,
    lung_mask,
    random_nodules,
    rle_decode,
    rle_encode,
    to_coco,
)
from dxr_core.volume import Volume


@pytest.fixture(scope="module")
def ct():
    from dxr_core.phantom import make_chest_phantom

    return make_chest_phantom(5, spacing_mm=3.0)


@pytest.fixture(scope="module")
def base(ct):
    from dxr_core.drr import Physics, make_geometry, render_drr

    geo = make_geometry(ct, view="pa", size=(256, 256))
    return render_drr(ct, geo, Physics(mode="poly"))


@pytest.fixture(scope="module")
def lung(ct):
    return LungDistance(ct)


def _spot(ct, lung, depth=16.0, side=1):
    """A point deep in one lung (fixed, for sweeps)."""
    cells = np.argwhere(lung.dist >= depth)
    pts = ct.index_to_world(lung.cell_center_index(cells))
    pts = pts[np.sign(pts[:, 0]) == side]
    return pts[np.argmin(np.abs(pts[:, 2] - np.median(pts[:, 2])) + np.abs(pts[:, 0] - np.median(pts[:, 0])))]


def test_lung_mask_finds_lungs_and_rejects_non_chest(ct):
    m = lung_mask(ct)
    ml = m.sum() * np.prod(ct.spacing) / 1000
    assert 2500 < ml < 9000
    assert not m[:, :, :2].any() and not m[:, :2].any()  # outside air is not lung
    assert (ct.array[m] < -400).mean() > 0.9  # mostly air-filled parenchyma (vessels filled in)
    water = Volume(np.zeros((20, 30, 30), np.float32) - 1000, spacing=(2, 2, 2))
    water.array[:, 5:25, 5:25] = 0
    with pytest.raises(InputError):
        lung_mask(water)


def test_nodule_validation_and_rle():
    with pytest.raises(OptionError):
        Nodule(diameter_mm=40)
    with pytest.raises(OptionError):
        Nodule(kind="ggo", hu=-100)
    with pytest.raises(OptionError):
        Nodule(kind="calcified", hu=150)
    with pytest.raises(OptionError):
        Nodule(shape="cube")
    m = np.zeros((7, 9), bool)
    m[2:5, 3:8] = True
    m[6, 0] = True
    assert np.array_equal(rle_decode(rle_encode(m)), m)
    assert sum(rle_encode(m)["counts"]) == m.size


def test_random_nodules_stay_inside_the_lung(ct, lung):
    nods = random_nodules(ct, 4, seed=3, diameter_range=(8, 25), lung=lung)
    assert len(nods) == 4 and nods == random_nodules(ct, 4, seed=3, diameter_range=(8, 25), lung=lung)
    mask = lung.mask
    for n in nods:
        check_inside_lung(n, lung)
        # the whole nodule body lies inside the lung mask
        ext = n.body_extent_mm
        g = np.mgrid[-1:1:9j, -1:1:9j, -1:1:9j].reshape(3, -1).T * ext + np.asarray(n.center_lps)
        g = g[np.linalg.norm(g - n.center_lps, axis=1) <= ext]
        idx = np.round(ct.world_to_index(g)).astype(int)
        assert mask[idx[:, 2], idx[:, 1], idx[:, 0]].all()
    with pytest.raises(InputError):
        check_inside_lung(Nodule(diameter_mm=20, center_lps=(0.0, 60.0, 0.0)), lung)  # in the spine


def test_insertion_partial_volume_and_kinds(ct, lung):
    c = _spot(ct, lung)
    for kind, lo, hi in (("solid", -10, 100), ("ggo", -1000, -600), ("calcified", 200, 3000)):
        v = insert_nodules(ct, [Nodule(kind=kind, diameter_mm=15, center_lps=c)])
        ijk = tuple(np.round(ct.world_to_index(np.asarray(c)[None])[0]).astype(int)[::-1])
        assert lo <= v.array[ijk] <= hi
        d = v.array - ct.array
        # partial volume: edge voxels take intermediate values; volume of the change ~ sphere volume
        if kind == "solid":
            den = 40.0 - ct.array
            frac = np.where(np.abs(den) > 50, d / np.where(np.abs(den) > 50, den, 1.0), 0.0)
            vol = (frac * (np.abs(d) > 0)).sum() * np.prod(ct.spacing)
            assert vol == pytest.approx(4 / 3 * np.pi * 7.5**3, rel=0.1)
            assert ((frac > 0.05) & (frac < 0.95)).sum() > 10
    ps = insert_nodules(ct, [Nodule(kind="part_solid", diameter_mm=20, center_lps=c)])
    ijk = tuple(np.round(ct.world_to_index(np.asarray(c)[None])[0]).astype(int)[::-1])
    assert ps.array[ijk] > -100  # solid core in ground glass


@pytest.mark.parametrize("offset", [(0.0, 0.0), (1.0, 1.0)])
def test_projected_box_centre_and_area(ct, lung, offset):
    from dxr_core.drr import Physics, make_geometry, render_drr

    c = _spot(ct, lung, depth=14.0, side=1 if offset[0] else -1)
    # near the axis (isocentre at the nodule) and off-axis (isocentre elsewhere)
    iso = c - np.array([35.0 * offset[0], 0.0, 45.0 * offset[1]])
    geo = make_geometry(ct, view="pa", size=(256, 256), pixel_spacing_mm=0.8, isocenter_lps=iso)
    drr = render_drr(ct, geo, Physics(mode="mono"))
    nod = Nodule(kind="solid", diameter_mm=20.0, center_lps=c, shape="sphere")
    _, _, labels = add_nodules_to_drr(drr, ct, [nod], seed=0)
    lab = labels[0]
    P = geo.projection_matrix
    h = P @ np.append(c, 1.0)
    col, row = h[0] / h[2], h[1] / h[2]
    assert np.allclose(lab["centre_px"], [col, row])
    x, y, w, hgt = lab["bbox"]
    assert x <= col + 0.5 <= x + w and y <= row + 0.5 <= y + hgt
    # analytic area: the cone from the source tangent to the sphere cuts the detector in an ellipse; project
    # the tangency circle with the 3x4 matrix and take the polygon area
    s = np.asarray(geo.source_lps)
    a = c - s
    dist = np.linalg.norm(a)
    a /= dist
    R = 10.0
    L = np.sqrt(dist**2 - R**2)
    ctr = s + a * L * L / dist
    rad = L * R / dist
    u = np.cross(a, [0, 0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    t = np.linspace(0, 2 * np.pi, 721)[:-1]
    ring = ctr + rad * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
    pp = geo.project_points(ring)
    area = 0.5 * abs(np.dot(pp[:, 0], np.roll(pp[:, 1], 1)) - np.dot(pp[:, 1], np.roll(pp[:, 0], 1)))
    assert lab["area"] == pytest.approx(area, rel=0.05)
    assert rle_decode(lab["segmentation"]).sum() == lab["area"]


def test_visibility_grows_with_diameter_and_contrast_ggo_lower(ct, lung, base):
    c = _spot(ct, lung, depth=17.0)

    def vis(**kw):
        _, _, lab = add_nodules_to_drr(base, ct, [Nodule(center_lps=c, **kw)], seed=0)
        return lab[0]["visibility"]

    by_d = [vis(kind="solid", diameter_mm=d) for d in (5.0, 10.0, 20.0, 30.0)]
    assert all(np.diff(by_d) > 0), by_d
    by_hu = [vis(kind="solid", diameter_mm=12.0, hu=h) for h in (-10.0, 40.0, 100.0)]
    assert all(np.diff(by_hu) > 0), by_hu
    by_ggo = [vis(kind="ggo", diameter_mm=12.0, hu=h) for h in (-800.0, -700.0, -600.0)]
    assert all(np.diff(by_ggo) > 0), by_ggo
    assert vis(kind="ggo", diameter_mm=12.0) < vis(kind="part_solid", diameter_mm=12.0) < by_hu[1]
    assert vis(kind="ggo", diameter_mm=20.0) < by_d[2]


def test_delta_retrace_matches_full_render(ct, lung, base):
    from dxr_core.drr import render_drr

    nods = random_nodules(ct, 2, seed=9, lung=lung, kinds=["solid", "calcified"])
    drr2, vol2, labels = add_nodules_to_drr(base, ct, nods, seed=0)
    full = render_drr(vol2, base.geometry, base.physics)
    assert np.abs(drr2.image - full.image).max() < 2e-3
    changed = np.abs(drr2.image - base.image) > 0
    boxes = np.zeros_like(changed)
    for lab in labels:
        x, y, w, h = lab["bbox"]
        boxes[max(y - 12, 0) : y + h + 12, max(x - 12, 0) : x + w + 12] = True
    assert not (changed & ~boxes).any()  # only pixels around the nodules changed
    coco = to_coco([("x.png", drr2, labels)])
    json.dumps(coco)
    assert len(coco["annotations"]) == 2 and {a["category_id"] for a in coco["annotations"]} <= {1, 4}


def test_dxr_drr_nodules_from_phantom_dicom_series(tmp_path):
    from dxr_core.cli import main

    series = tmp_path / "series"
    assert main(["phantom", "--out", str(series), "--dicom", "--seed", "7", "--spacing", "4,4,5"]) == 0
    out = tmp_path / "out"
    rc = main(["drr", "--ct", str(series), "--out", str(out), "--nodules", "2", "--size", "128",
               "--formats", "png,json", "--stem", "case"])
    assert rc == 0
    coco = json.loads((out / "case.coco.json").read_text())
    assert len(coco["annotations"]) == 2
    assert coco["images"][0]["file_name"] == "case.png" and (out / "case.png").exists()
    for a in coco["annotations"]:
        assert a["visibility"] > 0 and 3 <= a["diameter_mm"] <= 30 and a["area"] > 0
        assert set(a) >= {"bbox", "segmentation", "area", "category_id", "centre_px", "centre_lps", "diameter_mm"}
    side = json.loads((out / "case.json").read_text())
    assert len(side["nodules"]) == 2
    # same command again: finished outputs are kept (resume)
    assert main(["drr", "--ct", str(series), "--out", str(out), "--nodules", "2", "--size", "128",
                 "--formats", "png,json", "--stem", "case"]) == 0


@pytest.mark.parametrize("shape", ["sphere", "ellipsoid", "lobulated", "spiculated"])
@pytest.mark.parametrize("kind", ["solid", "part_solid"])
def test_fast_partial_volume_equals_full_supersampling(shape, kind, monkeypatch):
    from dxr_core.nodules.models import nodule_patch

    vol = Volume(np.full((24, 24, 24), -850.0, np.float32), spacing=(1.5, 1.5, 2.0), origin=(-17.25, -17.25, -23.0))
    nod = Nodule(kind=kind, diameter_mm=14.0, center_lps=(0.4, -0.3, 0.2), shape=shape, seed=11)
    _, fast, _ = nodule_patch(vol, nod)
    monkeypatch.setattr(Nodule, "classify", lambda self, c, h: (np.zeros(len(c), bool), np.ones(len(c), bool)))
    _, full, _ = nodule_patch(vol, nod)
    assert np.abs(fast - full).max() < 1e-3


def test_dxr_drr_nodule_at_point_and_clear_errors(tmp_path, capsys, ct, lung):
    from dxr_core.cli import main

    nii = tmp_path / "ct.nii.gz"
    assert main(["phantom", "--out", str(nii), "--seed", "5", "--spacing", "3"]) == 0
    c = _spot(ct, lung, depth=14.0)
    out = tmp_path / "o"
    args = ["drr", "--ct", str(nii), "--out", str(out), "--size", "96", "--formats", "png,json",
            "--nodule-at", ",".join(f"{v:.2f}" for v in c), "--nodule-kinds", "calcified", "--nodule-diameter", "8,8"]
    assert main(args) == 0
    coco = json.loads((out / "ct.coco.json").read_text())
    (a,) = coco["annotations"]
    assert a["category"] == "calcified" and np.allclose(a["centre_lps"], c, atol=0.01) and a["diameter_mm"] == 8
    capsys.readouterr()
    assert main(args[:-6] + ["--nodule-at", "0,60,0", "--force"]) == 2  # inside the spine: not in the lung
    assert "pleura" in capsys.readouterr().err
    assert main(args[:-6] + ["--nodules", "1", "--nodule-kinds", "bogus", "--force"]) == 2
    assert "unknown bogus" in capsys.readouterr().err


def test_oblique_ct_insertion_and_labels(ct):
    """A CT with an oblique direction matrix: placement, insertion and labels all go through index<->LPS."""
    from dxr_core.drr import Physics, make_geometry, render_drr
    from dxr_core.phantom.primitives import rotation

    rot = rotation(8.0, 5.0, -4.0)
    obl = Volume(ct.array, spacing=ct.spacing, origin=ct.origin, direction=rot)
    geo = make_geometry(obl, view="pa", size=(128, 128))
    base = render_drr(obl, geo, Physics(mode="mono"))
    (nod,) = random_nodules(obl, 1, seed=2, kinds=["solid"], shapes=["sphere"], diameter_range=(14, 14))
    check_inside_lung(nod, LungDistance(obl))
    drr2, vol2, (lab,) = add_nodules_to_drr(base, obl, [nod], seed=0)
    ijk = np.round(obl.world_to_index(np.asarray(nod.center_lps)[None])[0]).astype(int)
    assert -10 <= vol2.array[ijk[2], ijk[1], ijk[0]] <= 100  # the nodule sits where its LPS centre says
    full = render_drr(vol2, geo, Physics(mode="mono"))
    assert np.abs(drr2.image - full.image).max() < 2e-3
    x, y, w, h = lab["bbox"]
    col, row = lab["centre_px"]
    assert x <= col + 0.5 <= x + w and y <= row + 0.5 <= y + h
    diff = np.abs(full.image - base.image) > 1e-4
    ys, xs = np.nonzero(diff)
    assert x - 1 <= xs.min() and xs.max() <= x + w and y - 1 <= ys.min() and ys.max() <= y + h
