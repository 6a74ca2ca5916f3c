"""DRR geometry: views, projection matrix consistency, bad input -> actionable errors."""
import json

import numpy as np
import pytest

from dxr_core.drr import ConeBeamGeometry, Physics, make_geometry, project, render_drr
from dxr_core.errors import GeometryError, InputError, OptionError
from dxr_core.volume import Volume


def _vol(direction=None):
    a = np.zeros((20, 24, 28), np.float32)
    return Volume(a, (1.0, 1.2, 1.5), (-14.0, -12.0, -10.0), np.eye(3) if direction is None else direction)


def test_pa_conventions_and_matrix():
    v = _vol()
    g = make_geometry(v, "pa", size=(64, 80), pixel_spacing_mm=0.8)
    assert np.allclose(g.row_direction, [1, 0, 0]) and np.allclose(g.col_direction, [0, 0, -1])
    assert g.source_lps[1] > v.center_lps[1]  # source posterior
    assert g.patient_orientation == ("L", "F")
    # isocenter projects to the detector centre; patient left -> larger column, head -> smaller row
    c = g.project_points(v.center_lps[None])[0]
    assert np.allclose(c, [(80 - 1) / 2, (64 - 1) / 2])
    left = g.project_points((v.center_lps + [10, 0, 0])[None])[0]
    head = g.project_points((v.center_lps + [0, 0, 10])[None])[0]
    assert left[0] > c[0] and head[1] < c[1]
    # magnification SID/SAD at the isocenter
    assert np.isclose((left[0] - c[0]) * 0.8, 10 * 1.5)
    # pixel_to_world of a pixel lies on the line through the source and the projected point
    p = g.pixel_to_world(np.array([[3.0, 7.0]]))[0]
    assert np.allclose(g.project_points(((p + g.source_lps) / 2)[None])[0], [3, 7])
    d = g.to_dict()
    g2 = ConeBeamGeometry.from_dict(json.loads(json.dumps(d)))
    assert np.allclose(g2.projection_matrix, g.projection_matrix)


@pytest.mark.parametrize("view,src_axis,sign", [("ap", 1, -1), ("lateral", 0, -1), ("rlat", 0, 1)])
def test_other_views(view, src_axis, sign):
    v = _vol()
    g = make_geometry(v, view, size=32)
    assert np.sign(g.source_lps[src_axis] - v.center_lps[src_axis]) == sign
    assert np.isclose(np.linalg.norm(g.source_lps - v.center_lps), 1000.0)
    assert np.isclose(np.linalg.norm(g.detector_center_lps - g.source_lps), 1500.0)
    # the whole volume is on the detector with the auto spacing
    cr = g.project_points(v.corners_lps())
    assert cr.min() >= -0.5 and cr[:, 0].max() <= 31.5 and cr[:, 1].max() <= 31.5


def test_rotation_is_rigid_about_isocenter():
    v = _vol()
    g = make_geometry(v, "pa", size=32, rotation_deg=90)
    assert np.allclose(g.source_lps - v.center_lps, [-1000, 0, 0], atol=1e-9)  # +90 about S: P -> R... (right-handed)
    g3 = make_geometry(v, "pa", size=32, rotation_deg=(30, 15, 5))
    assert np.isclose(np.linalg.norm(g3.source_lps - v.center_lps), 1000.0)
    assert np.isclose(abs(g3.row_direction @ g3.col_direction), 0, atol=1e-12)


@pytest.mark.parametrize("kw,msg", [
    (dict(sid_mm=900, sad_mm=1000), "SID"),
    (dict(sid_mm=1000, sad_mm=1000), "SID"),
    (dict(size=(0, 10)), "Detector size"),
    (dict(size=(-5, 10)), "Detector size"),
    (dict(pixel_spacing_mm=0.0), "spacing"),
    (dict(pixel_spacing_mm=-1.0), "spacing"),
    (dict(pixel_spacing_mm=(1.0, float("nan"))), "spacing"),
    (dict(view="oblique-ish"), "view"),
    (dict(sad_mm=5.0, sid_mm=10.0), "inside"),
])
def test_bad_geometry(kw, msg):
    with pytest.raises(GeometryError, match=msg):
        make_geometry(_vol(), **kw)


def test_nan_volume_and_bad_physics():
    a = np.zeros((8, 8, 8), np.float32)
    a[3, 3, 3] = np.nan
    v = Volume(a)
    g = make_geometry(v, "pa", size=16)
    with pytest.raises(InputError, match="NaN"):
        project(v, g)
    with pytest.raises(InputError, match="NaN"):
        render_drr(v, g)
    with pytest.raises(OptionError):
        Physics(mode="laser")
    with pytest.raises(OptionError):
        Physics(photons_per_pixel=-3)
    with pytest.raises(GeometryError, match="pixel_box"):
        project(Volume(np.zeros((8, 8, 8), np.float32)), g, pixel_box=(5, 5, 0, 4))
