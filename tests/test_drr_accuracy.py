"""Projector accuracy against closed-form chord lengths through an ellipsoid (axis-aligned and oblique)."""
import numpy as np
import pytest

from dxr_core.drr import make_geometry, project
from dxr_core.drr import _ckernel
from dxr_core.volume import Volume


def _rot(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def ellipsoid_volume(n, spacing, direction, centre, radii, rot, ss=4):
    """Partial-volume voxelisation (ss^3 sub-samples per voxel) of the ellipsoid {x: |R^T (x-c) / radii| <= 1}."""
    origin = np.asarray(centre) - direction @ (np.asarray(spacing) * (np.asarray(n) - 1) / 2)
    v = Volume(np.zeros(n[::-1], np.float32), spacing, origin, direction)
    off = (np.arange(ss) + 0.5) / ss - 0.5
    acc = np.zeros(n[::-1], np.float32)
    kk, jj, ii = np.meshgrid(*(np.arange(m, dtype=np.float64) for m in n[::-1]), indexing="ij")
    for ox in off:
        for oy in off:
            for oz in off:
                ijk = np.stack([ii + ox, jj + oy, kk + oz], -1)
                x = v.index_to_world(ijk) - centre
                y = x @ rot  # R^T x
                acc += (((y / radii) ** 2).sum(-1) <= 1.0)
    return v.with_array(acc / ss ** 3)


def chords(src, pts, centre, radii, rot):
    """Exact length of the segment source->pixel inside the ellipsoid (closed form, quadratic)."""
    o = (src - centre) @ rot / radii
    d = (pts - src) @ rot / radii
    dl = np.linalg.norm(pts - src, axis=1)
    a = (d * d).sum(1)
    b = 2 * (d * o).sum(1)
    c = (o * o).sum() - 1
    disc = b * b - 4 * a * c
    t = np.sqrt(np.clip(disc, 0, None)) / a
    return np.where(disc > 0, t * dl, 0.0)


CASES = {
    "axis_aligned_pa": dict(direction=np.eye(3), rot=np.eye(3), view="pa", rotation=0.0),
    "rotated_object_lateral": dict(direction=np.eye(3), rot=_rot([1, 2, 3], 35), view="lateral", rotation=0.0),
    "oblique_volume_rotated_gantry": dict(direction=_rot([1, -1, 2], 25), rot=_rot([2, 1, 0], 40), view="pa",
                                          rotation=(30.0, 10.0, 5.0)),
}


_CACHE = {}
RADII = np.array([40.0, 30.0, 24.0])  # mm; 1 mm voxels
CENTRE = np.array([3.0, -2.0, 1.0])
RIM_MM = 1.5  # rays must pass >= 1.5 voxels inside the silhouette rim for the p99 criterion


def _case(case):
    if case not in _CACHE:
        p = CASES[case]
        _CACHE[case] = ellipsoid_volume((90, 90, 90), (1.0, 1.0, 1.0), p["direction"], CENTRE, RADII, p["rot"], ss=3)
    return _CACHE[case]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_ellipsoid_line_integrals(case, native, monkeypatch):
    """Criterion: median |rel err| <= 0.5 % over rays with chord >= 3 voxels (3 mm); p99 <= 2 % over those of them
    that also pass >= 1.5 voxels inside the rim (i.e. cross the ellipsoid shrunk by 1.5 mm): at the rim the chord
    changes by ~its own length over one voxel, so any voxelised (partial-volume) model errs by tens of % there.
    This cut removes ~10 % of the crossing rays; the numbers are printed (pytest -s)."""
    if not native:
        monkeypatch.setattr(_ckernel, "_LIB", None)
        monkeypatch.setattr(_ckernel, "_TRIED", True)
    elif _ckernel.load() is None:
        pytest.skip("no C compiler: native kernel unavailable (torch path is tested separately)")
    p = CASES[case]
    v = _case(case)
    n = 96
    g = make_geometry(v, p["view"], size=(n, n), pixel_spacing_mm=1.4, rotation_deg=p["rotation"],
                      isocenter_lps=CENTRE + [1.0, 0.5, -0.5])
    img = project(v, g).astype(np.float64)
    rr, cc = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pts = g.pixel_to_world(np.stack([cc.ravel(), rr.ravel()], -1))
    truth = chords(g.source_lps, pts, CENTRE, RADII, p["rot"]).reshape(n, n)
    inner = chords(g.source_lps, pts, CENTRE, RADII - RIM_MM, p["rot"]).reshape(n, n)
    sel = truth >= 3.0
    core = sel & (inner > 0)
    assert core.sum() > 2000
    rel = np.abs(img - truth) / np.maximum(truth, 1e-9)
    med, p99_all, p99 = np.median(rel[sel]), np.percentile(rel[sel], 99), np.percentile(rel[core], 99)
    print(f"{case} native={native}: median {med:.3%} over {sel.sum()} rays (chord>=3 mm); p99 {p99:.3%} over "
          f"{core.sum()} rays >= {RIM_MM} mm inside the rim (p99 incl. rim rays {p99_all:.1%})")
    assert med <= 0.005 and p99 <= 0.02
    # rays that miss the ellipsoid grown by 2.5 mm (voxel diagonal + interpolation support) see nothing
    outer = chords(g.source_lps, pts, CENTRE, RADII + 2.5, p["rot"]).reshape(n, n)
    assert np.abs(img[outer == 0]).max() < 1e-4
