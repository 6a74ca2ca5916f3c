"""One request schema: `dxr drr` options and a server request give the same DRRParams, geometry, physics and
acquisition (dxr_core.params + dxr_core.pipeline)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from dxr_core.errors import OptionError
from dxr_core.params import DRRParams
from dxr_core.pipeline import acquisition_of, cleanup_steps, geometry_of, physics_of
from test_cli_drr import chest


def _cli(*argv):
    from dxr_core.drr.commands import add_arguments, drr_params

    p = argparse.ArgumentParser()
    add_arguments(p)
    for hook in __import__("dxr_core.drr.commands", fromlist=["discover_hooks"]).discover_hooks():
        if callable(getattr(hook, "add_arguments", None)):
            hook.add_arguments(p)
    return drr_params(p.parse_args(["--ct", "x", "--out", "y", *argv]), seed=3)


@pytest.mark.parametrize("argv,req", [
    ((), {}),
    (("--preset", "none", "--kvp", "100"), {"preset": "none", "kvp": 100}),
    (("--preset", "lateral", "--size", "64"), {"preset": "lateral", "size": 64}),
    (("--scatter", "off", "--grid-ratio", "6", "--processing", "raw", "--cleanup", "table"),
     {"scatter": False, "grid_ratio": 6, "processing": "raw", "cleanup": "table"}),
    (("--preset", "none", "--detector", "on"), {"preset": "none", "detector": True}),
])
def test_cli_options_and_server_request_are_one_schema(argv, req):
    vol = chest(nz=8, n=24)
    a, b = _cli(*argv), DRRParams.from_request({"seed": 3, **req})
    for key in ("preset", "view", "size", "sid", "sad", "kvp", "mode", "scatter", "grid_ratio", "detector",
                "processing"):
        assert getattr(a, key) == getattr(b, key), key
    assert cleanup_steps(a) == cleanup_steps(b)
    np.testing.assert_allclose(geometry_of(vol, a).projection_matrix, geometry_of(vol, b).projection_matrix)
    assert physics_of(a).to_dict() == physics_of(b).to_dict()
    acq_a, acq_b = acquisition_of(a), acquisition_of(b)
    assert (acq_a is None) == (acq_b is None)
    if acq_a is not None:
        assert acq_a.to_dict() == acq_b.to_dict()


def test_switches_and_defaults():
    d = DRRParams.from_request({})
    assert d.preset == "pa-chest" and d.sid == 1800.0 and cleanup_steps(d) == "table,fov,taper,contrast"
    acq = acquisition_of(d)
    assert acq.scatter.enabled and acq.detector.enabled and acq.grid.ratio == 10.0
    raw = DRRParams.from_request({"preset": "none"})
    assert acquisition_of(raw) is None and cleanup_steps(raw) == "none" and raw.sid == 1500.0
    off = acquisition_of(DRRParams.from_request({"scatter": "off", "detector": False, "processing": "raw"}))
    assert not off.scatter.enabled and not off.detector.enabled and off.processing.mode == "raw"
    with pytest.raises(OptionError, match="cleanup"):
        DRRParams.from_request({"cleanup": "table,couch"})
    with pytest.raises(OptionError, match="processing"):
        DRRParams.from_request({"processing": "fancy"})
