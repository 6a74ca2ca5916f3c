"""The native kernel's exact empty-space skipping (rows / column ranges whose converted values are all 0) changes
nothing: native == torch path (no skipping) to float rounding, for HU renders (air at and below -1000 HU clamps
to 0) and raw projections (zeros, negative values), views whose column taps run forwards (PA), backwards (AP) and
strided (lateral), detector sub-boxes, and a detector much coarser than the grid."""
import numpy as np
import pytest

from dxr_core.drr import Physics, make_geometry, project, render_drr
from dxr_core.drr import _ckernel
from dxr_core.volume import Volume


def _body_ct():
    rng = np.random.default_rng(3)
    a = np.full((40, 48, 56), -1000.0, np.float32)
    a[:, :, :4] = -1024.0  # below air: clamps to 0 as well
    a[6:34, 10:40, 9:47] = 30.0
    a[10:30, 16:34, 14:26] = -850.0
    a[8:32, 30:36, 25:31] = 1100.0
    a[20, 20, 50] = 500.0  # an isolated voxel in the air
    a[6:34, 10:40, 9:47] += rng.normal(0, 5, (28, 30, 38)).astype(np.float32)
    return Volume(a, (1.8, 1.6, 2.2), (-50.0, -38.0, -44.0))


def _both(fn, monkeypatch):
    if _ckernel.load() is None:
        pytest.skip("no C compiler: native kernel unavailable")
    native = fn()
    with monkeypatch.context() as m:
        m.setattr(_ckernel, "_LIB", None)
        m.setattr(_ckernel, "_TRIED", True)
        ref = fn()
    return native, ref


@pytest.mark.parametrize("view", ["pa", "ap", "lateral"])
@pytest.mark.parametrize("mode", ["mono", "poly"])
def test_render_skipping_is_exact(view, mode, monkeypatch):
    v = _body_ct()
    g = make_geometry(v, view, size=(72, 80))
    nat, ref = _both(lambda: render_drr(v, g, Physics(mode=mode)), monkeypatch)
    scale = float(np.abs(ref.line_integral).max())
    assert np.abs(nat.line_integral - ref.line_integral).max() <= 1e-5 * scale
    if mode == "poly":
        assert np.abs(nat.basis - ref.basis).max() <= 1e-5 * float(np.abs(ref.basis).max())
    assert np.abs(nat.image - ref.image).max() < 1e-5
    assert (nat.line_integral == 0).sum() > 0  # rays through air only exist and stay exactly 0


@pytest.mark.parametrize("view,size,box", [("pa", (64, 64), None), ("ap", (50, 70), (5, 41, 12, 60)),
                                           ("lateral", (60, 60), (0, 60, 20, 33)), ("pa", (9, 7), None)])
def test_project_skipping_is_exact(view, size, box, monkeypatch):
    a = np.zeros((36, 40, 44), np.float32)
    a[8:28, 10:30, 12:32] = 1.0
    a[14:20, 12:16, 14:40] = -0.5  # negative values are not "empty"
    a[3, 35, 40] = 2.0
    v = Volume(a, (1.0, 1.2, 1.5), (0.0, 0.0, 0.0))
    g = make_geometry(v, view, size=size)
    nat, ref = _both(lambda: project(v, g, pixel_box=box), monkeypatch)
    assert np.abs(nat - ref).max() <= 1e-5 * float(np.abs(ref).max())
