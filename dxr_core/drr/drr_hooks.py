"""`dxr drr` hook: ``--cleanup table,fov,taper,contrast`` cleans the CT before projection.

Steps (see :mod:`dxr_core.drr.cleanup`): ``table`` removes the couch (body mask), ``fov`` completes the body cut
by the reconstruction circle (flagged as synthetic), ``taper`` continues the scan-range ends with a fade to air,
``contrast`` maps an iodine-enhanced blood pool to unenhanced blood (40 HU). With any step on, contrast is detected
and a warning printed when the CT looks enhanced. ``all`` = all four, ``none`` = off. Default: off, so today's
output is unchanged; with ``--preset`` (a clinical radiograph) the default is ``all``. The report goes into the
sidecar under ``"cleanup"``; the settings (resume check) under ``hooks``.

The detector geometry is fitted to the CT *as read* before the clean-up widens the grid, so a render with and
without clean-up has the same pixels and projection matrix.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from dxr_core.errors import DXRError


def _steps(text: str) -> str:
    from dxr_core.drr.cleanup import parse_steps

    try:
        parse_steps(text)
    except DXRError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--cleanup: ", "")) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CT clean-up (dxr_core.drr.cleanup)")
    g.add_argument("--cleanup", type=_steps, default=None, metavar="STEPS",
                   help="clean the CT before projection: comma list of table (remove the couch), fov (complete the "
                        "body cut by the reconstruction circle; synthetic, flagged), taper (fade the scan-range "
                        "ends), contrast (map iodine-enhanced blood to 40 HU); all; none. Contrast is detected "
                        "(with a warning) whenever a step is on. Default: none; with --preset: all")


def options(args):
    """:class:`CleanupOptions` of the parsed arguments (``--preset`` without ``--cleanup`` means all)."""
    from dxr_core.drr.cleanup import default_steps, parse_steps

    return parse_steps(default_steps(getattr(args, "cleanup", None), getattr(args, "preset", None)))


def settings(args) -> dict:
    opt = options(args)
    return {"cleanup": opt.to_dict()} if opt.any else {}


def before_render(job) -> None:
    opt = options(job.args)
    if not opt.any:
        return
    from dxr_core.drr.cleanup import ContrastWarning, cleanup_ct
    from dxr_core.pipeline import geometry_of

    if job.geometry is None:  # fit the detector to the measured CT, before the grid is widened
        job.geometry = geometry_of(job.volume, job.params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContrastWarning)
        job.volume, report = cleanup_ct(job.volume, opt)
    for w in caught:
        if issubclass(w.category, ContrastWarning):
            print(f"dxr drr: warning: {job.stem}: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    job.sidecar_extra["cleanup"] = report
