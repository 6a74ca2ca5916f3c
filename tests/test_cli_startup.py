"""`dxr --help` and subcommand help build every parser without importing torch (lazy package exports), and the
lazy exports still resolve to the real objects."""
import subprocess
import sys

from conftest import ROOT


def test_parser_build_does_not_import_torch():
    code = ("import sys; from dxr_core.cli import build_parser; p = build_parser(); "
            "p.parse_args(['drr', '--ct', 'x', '--out', 'y', '--nodules', '2']); "
            "p.parse_args(['enhance', 'a.png', '--out', 'o']); "
            "heavy = sorted(m for m in ('torch', 'monai', 'ignite') if m in sys.modules); print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"building the dxr parser imported {res.stdout.strip()}"


def test_lazy_exports_resolve():
    import dxr_core.diffusion as diffusion
    import dxr_core.drr as drr
    import dxr_core.nodules as nodules
    from dxr_core.diffusion.defaults import DEFAULT_SAMPLER, SAMPLERS
    from dxr_core.diffusion.enhancer import load_enhancer
    from dxr_core.drr.render import render_drr

    assert drr.render_drr is render_drr and diffusion.load_enhancer is load_enhancer
    assert callable(nodules.random_nodules) and "render_drr" in dir(drr)
    assert DEFAULT_SAMPLER in SAMPLERS and diffusion.SAMPLERS == SAMPLERS
    try:
        drr.no_such_name
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("unknown attribute resolved")
