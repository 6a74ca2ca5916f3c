"""`dxr phantom`: write the seeded chest CT phantom as NIfTI/NRRD/MHA or (--dicom) a CT DICOM series."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dxr_core.errors import OptionError


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma list such as 0.7,0.7,2.5") from None
    if len(vals) not in (1, 3) or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: give one positive number or three (x,y,z), e.g. 0.7,0.7,2.5")
    return vals if len(vals) == 3 else vals * 3


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="write a seeded procedural chest CT phantom (NIfTI/NRRD/MHA or a DICOM series)",
        description="Voxelise the analytic chest phantom (HU, LPS, supine) at any spacing with partial-volume "
        "supersampling; optional clinical CT effects.",
    )
    p.add_argument("--out", required=True, metavar="PATH",
                   help="output file (.nii.gz, .nii, .nrrd, .mha) or, with --dicom, a folder")
    p.add_argument("--seed", type=int, default=0, help="anatomy seed (default 0)")
    p.add_argument("--spacing", type=_floats, default=(1.5, 1.5, 2.5), metavar="MM",
                   help="voxel spacing x,y,z in mm or one number (default 1.5,1.5,2.5)")
    p.add_argument("--shape", type=lambda t: tuple(int(v) for v in _floats(t)), default=None, metavar="X,Y,Z",
                   help="voxel counts x,y,z (default: cover the body)")
    p.add_argument("--dicom", action="store_true", help="write a CT Image Storage DICOM series into the --out folder")
    p.add_argument("--breast", action="store_true", help="add breast tissue")
    p.add_argument("--slice-thickness", type=float, default=None, metavar="MM", help="slice sensitivity FWHM")
    p.add_argument("--kernel", choices=("soft", "standard", "sharp"), default=None, help="reconstruction kernel blur")
    p.add_argument("--dose-mas", type=float, default=None, metavar="MAS", help="add CT noise for this tube load")
    p.set_defaults(run=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    from dxr_core.phantom import CTEffects, make_chest_phantom

    out = Path(args.out).expanduser()
    if not args.dicom:
        name = out.name.lower()
        if not name.endswith((".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")):
            raise OptionError(f"--out {str(out)!r} has no volume extension; use .nii.gz, .nrrd or .mha, "
                              "or add --dicom to write a DICOM series folder.")
        if out.is_dir():
            raise OptionError(f"--out {str(out)!r} is a folder; give a file name such as ct.nii.gz or add --dicom.")
    fx = None
    if args.slice_thickness is not None or args.kernel is not None or args.dose_mas is not None:
        fx = CTEffects(slice_thickness_mm=args.slice_thickness, kernel=args.kernel, dose_mAs=args.dose_mas,
                       seed=args.seed)
    t0 = time.perf_counter()
    vol = make_chest_phantom(seed=args.seed, spacing_mm=args.spacing, shape=args.shape, ct_effects=fx,
                             breast=args.breast, progress=True)
    if args.dicom:
        from dxr_core.phantom.dicom import write_dicom_series

        write_dicom_series(vol, out)
    else:
        import SimpleITK as sitk

        from dxr_core.io.atomic import atomic_path

        with atomic_path(out) as tmp:
            sitk.WriteImage(vol.to_sitk(), str(tmp), True)
    x, y, z = vol.shape_xyz
    print(f"{out}  ({x}x{y}x{z} voxels, spacing {','.join(f'{s:g}' for s in vol.spacing)} mm, seed {args.seed}, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0
