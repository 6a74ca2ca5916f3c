"""`dxr drr`: render digitally reconstructed radiographs from one CT (--ct) or every CT under a folder (--ct-dir).

Outputs per CT: ``<stem>.dcm`` (DICOM DX), ``<stem>.png`` (16-bit), ``<stem>.nrrd`` and ``<stem>.json`` (sidecar:
geometry, projection matrix, physics, source CT and the settings used). A CT whose outputs exist and whose
sidecar records the same settings is skipped, so an interrupted batch resumes where it stopped. In a batch a
failing CT is reported and the others go on; the exit status is non-zero when any failed.

Extension points (other packages add options without editing this file): any module
``dxr_core/<pkg>/drr_hooks.py`` is discovered and may define

* ``add_arguments(parser)`` - add its options to ``dxr drr`` (e.g. ``--nodules N``);
* ``settings(args) -> dict`` - JSON-able settings that change the output (part of the resume check and sidecar);
* ``before_render(job)`` - may replace ``job.volume`` (HU) or ``job.geometry`` before projection;
* ``after_render(job)`` - may replace ``job.drr``, add ``job.sidecar_extra`` entries and write extra files
  (atomically, via :mod:`dxr_core.io.atomic`) listed in ``job.extra_outputs`` (checked by the resume test).

Hooks see the parsed options as ``job.args``; a hook whose options are unset should do nothing.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dxr_core.drr.presets import DEFAULT_PRESET
from dxr_core.errors import DXRError, InputError, OptionError

DEFAULT_FORMATS = "dcm,png,nrrd,json"
VIEW_CHOICES = ("pa", "ap", "lat", "lateral", "rlat")
SIDECAR_KEY = "dxr_drr"  # sidecar entry holding the settings used (resume check)


# ----------------------------------------------------------------------------------------------------------------
# hooks
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RenderJob:
    """One CT to render; hooks read and modify it."""

    args: argparse.Namespace
    ct_path: Path
    out_dir: Path
    stem: str
    seed: int
    volume: Any = None  # dxr_core.volume.Volume (HU)
    geometry: Any = None  # dxr_core.drr.ConeBeamGeometry
    physics: Any = None  # dxr_core.drr.Physics
    params: Any = None  # dxr_core.params.DRRParams: the request (what the pipeline and the server take)
    drr: Any = None  # dxr_core.drr.DRR
    sidecar_extra: dict[str, Any] = field(default_factory=dict)
    extra_outputs: list[Path] = field(default_factory=list)


def discover_hooks() -> list[ModuleType]:
    """Modules ``dxr_core.<pkg>.drr_hooks`` (sorted by package name)."""
    import dxr_core

    hooks = []
    for mod in sorted(pkgutil.iter_modules(dxr_core.__path__), key=lambda m: m.name):
        # look for the file first: importing every package (some import torch) just to find none is slow
        if not mod.ispkg or not any((Path(p) / mod.name / "drr_hooks.py").is_file() for p in dxr_core.__path__):
            continue
        name = f"dxr_core.{mod.name}.drr_hooks"
        try:
            hooks.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
    return hooks


def _hook_call(hooks: list[ModuleType], fn: str, *a: Any) -> list[Any]:
    return [getattr(h, fn)(*a) for h in hooks if callable(getattr(h, fn, None))]


def expected_hook_outputs(hooks: list[ModuleType], args: argparse.Namespace, out_dir: Path, stem: str) -> list[Path]:
    """Extra files the hooks will write for this stem (optional ``expected_outputs(args, out_dir, stem)``)."""
    paths: list[Path] = []
    for res in _hook_call(hooks, "expected_outputs", args, out_dir, stem):
        paths.extend(Path(p) for p in (res or []))
    return paths


# ----------------------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int] | str:
    if str(text).strip().lower() == "native":  # the preset's detector matrix (e.g. 3000x3000 for pa-chest)
        return "native"
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a whole number of pixels (e.g. 512 or 512x400)")
    if len(vals) == 1:
        vals = (vals[0], vals[0])
    if len(vals) != 2 or min(vals) < 8 or max(vals) > 8192:
        raise argparse.ArgumentTypeError(f"size {text!r} must be ROWS or ROWSxCOLS with 8..8192 pixels")
    return vals  # type: ignore[return-value]


def _spacing(text: str) -> tuple[float, float]:
    parts = str(text).replace("x", ",").split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"spacing {text!r} is not a number of mm (e.g. 0.7 or 0.7,0.7)")
    if len(vals) == 1:
        vals = (vals[0], vals[0])
    if len(vals) != 2 or not all(0 < v < 100 for v in vals):
        raise argparse.ArgumentTypeError(f"spacing {text!r} must be one or two positive mm values below 100")
    return vals  # type: ignore[return-value]


def _positive(kind: type, name: str):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not a number")
        if not v > 0 or v != v or v in (float("inf"),):
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text}")
        return v

    return conv


def _preset(text: str) -> str | None:
    from dxr_core.drr.presets import PRESET_NAMES

    key = str(text).strip().lower().replace("_", "-")
    if key == "none":
        return None
    if key not in PRESET_NAMES:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; choose one of {', '.join(PRESET_NAMES)} or none")
    return key


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ct", metavar="PATH", help="one CT: DICOM series folder or NIfTI/NRRD/MHA file")
    src.add_argument("--ct-dir", metavar="DIR", help="render every CT (DICOM series folders, volume files) under DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--view", default=None, choices=VIEW_CHOICES,
                   help="projection view (default pa; with --preset the preset's view)")
    p.add_argument("--size", type=_size, default=None, metavar="N|RxC",
                   help="detector pixels, N or ROWSxCOLS, or 'native' for the preset detector's own matrix "
                        "(default 512, over the preset's field; with --spacing-mm the field divided by it)")
    p.add_argument("--spacing-mm", type=_spacing, default=None, metavar="MM",
                   help="detector pixel spacing in mm, one value or ROW,COL (default: fit the CT with a margin)")
    p.add_argument("--kvp", type=_positive(float, "--kvp"), default=None,
                   help="tube voltage (poly mode, default 120; with --preset the preset's)")
    p.add_argument("--mode", choices=("poly", "mono"), default="poly", help="polychromatic spectrum or one energy")
    p.add_argument("--energy-kev", type=_positive(float, "--energy-kev"), default=None,
                   help="photon energy in mono mode (default: the physics default)")
    p.add_argument("--dose", type=_positive(float, "--dose"), default=None, metavar="PHOTONS",
                   help="photons per detector pixel for quantum noise (default: no noise; with --detector on: the "
                        "preset's clinical dose, which this overrides)")
    p.add_argument("--sid-mm", type=_positive(float, "--sid-mm"), default=None,
                   help="source-image distance (default 1500; with --preset the preset's)")
    p.add_argument("--sad-mm", type=_positive(float, "--sad-mm"), default=None,
                   help="source-isocentre distance (default 1000; with --preset the preset's)")
    from dxr_core.drr.presets import PRESET_NAMES

    p.add_argument("--preset", default=DEFAULT_PRESET, type=_preset, metavar="|".join(PRESET_NAMES + ("none",)),
                   help="clinical chest acquisition and CT clean-up (geometry, kV, filtration incl. Cu, grid, CsI "
                        "detector, dose, processing; see docs/drr_physics.md); explicit options override it. "
                        f"Default {DEFAULT_PRESET}; 'none' gives the raw projection (SID 1500 / SAD 1000, no "
                        "scatter, detector or processing, CT as given)")
    p.add_argument("--scatter", default=None, choices=("on", "off"),
                   help="scatter-kernel superposition scatter (default: on with --preset, else off)")
    p.add_argument("--grid-ratio", type=float, default=None, metavar="R",
                   help="anti-scatter grid ratio, 0 = no grid (default: the preset's, else 0)")
    p.add_argument("--detector", default=None, choices=("on", "off"),
                   help="CsI flat-panel model: MTF, focal-spot blur, quantum + electronic noise at the preset's "
                        "clinical dose (150 uGy open-beam air kerma without one) or --dose (default: on with "
                        "--preset, else off)")
    p.add_argument("--processing", default=None, choices=("raw", "default"),
                   help="raw: fixed log window (today's output); default: multiscale processing + tone curve "
                        "(default: default with --preset, else raw)")
    p.add_argument("--rotation-deg", type=float, default=0.0, help="gantry rotation about the patient axis")
    p.add_argument("--formats", default=DEFAULT_FORMATS, help=f"comma list of outputs (default {DEFAULT_FORMATS})")
    p.add_argument("--seed", type=int, default=0, help="noise seed (per CT in --ct-dir: derived from it and the name)")
    p.add_argument("--stem", default=None, help="output file name stem for --ct (default: the CT's name)")
    p.add_argument("--force", action="store_true", help="render again even when finished outputs exist")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "drr", help="render DRRs (DICOM DX, 16-bit PNG, NRRD, JSON) from CT",
        description="Render digitally reconstructed radiographs from a CT or a folder of CTs. Finished outputs "
                    "are skipped on a rerun with the same settings.")
    add_arguments(p)
    for hook in discover_hooks():
        if callable(getattr(hook, "add_arguments", None)):
            hook.add_arguments(p)
    p.set_defaults(run=run_drr)


# ----------------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------------
def _ct_stem(ct: Path, root: Path | None = None) -> str:
    from dxr_core.io.ct import VOLUME_SUFFIXES

    rel = ct.relative_to(root) if root is not None and ct != root else Path(ct.name)
    name = str(rel)
    low = name.lower()
    for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if low.endswith(s):
            name = name[: -len(s)]
            break
    stem = "_".join(part for part in Path(name).parts if part not in ("", "."))
    stem = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in stem).strip("._")
    return stem or "ct"


def _fingerprint(ct: Path) -> list[Any]:
    """Cheap identity of a CT input (size and modification time of its files)."""
    try:
        if ct.is_dir():
            files = [f for f in ct.iterdir() if f.is_file()]
            return [len(files), sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files),
                                                                        default=0)]
        st = ct.stat()
        extra = []
        if ct.name.lower().endswith((".mhd", ".nhdr")):  # header + data file: the data's identity counts too
            extra = [f.stat().st_size for f in ct.parent.glob(ct.name.rsplit(".", 1)[0] + ".*") if f != ct]
        return [st.st_size, st.st_mtime_ns, sorted(extra)]
    except OSError:
        return []


DEFAULT_SIZE = (512, 512)
_LEGACY_DEFAULTS = {"view": "pa", "size": DEFAULT_SIZE, "kvp": 120.0, "sid_mm": 1500.0, "sad_mm": 1000.0}


def resolve_preset(args: argparse.Namespace) -> None:
    """Fill unset options from ``--preset`` (or from today's defaults without one). Idempotent."""
    preset = None
    if getattr(args, "preset", None):
        from dxr_core.drr.presets import get_preset

        preset = get_preset(args.preset)
    for name, legacy in _LEGACY_DEFAULTS.items():
        if getattr(args, name, None) is not None:
            continue
        if preset is None:
            val = legacy
        elif name == "size":
            sp = getattr(args, "spacing_mm", None)
            val = DEFAULT_SIZE if sp is None else \
                (max(8, int(round(preset.detector_mm / sp[0]))), max(8, int(round(preset.detector_mm / sp[1]))))
        else:
            val = {"view": preset.view, "kvp": preset.kvp, "sid_mm": preset.sid_mm, "sad_mm": preset.sad_mm}[name]
        setattr(args, name, val)
    if args.size == "native":
        if preset is None:
            raise OptionError("--size native needs a preset (its detector's matrix); give pixels, e.g. --size 512.")
        args.size = (preset.native_size,) * 2
    if preset is not None and getattr(args, "spacing_mm", None) is None:
        args.spacing_mm = (preset.detector_mm / args.size[0], preset.detector_mm / args.size[1])


def acquisition_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The acquisition options as given (None when none is: today's raw DRR, and today's settings record)."""
    keys = ("preset", "scatter", "grid_ratio", "detector", "processing")
    vals = {k: getattr(args, k, None) for k in keys}
    if all(v is None for v in vals.values()):
        return None
    return vals


def drr_params(args: argparse.Namespace, seed: int):
    """The :class:`~dxr_core.params.DRRParams` of the parsed options: the request that the pipeline (and the
    server) take, so `dxr drr` builds geometry, physics and acquisition the same way they do."""
    from dxr_core.params import DRRParams

    resolve_preset(args)

    def on(v):
        return None if v is None else v == "on"

    return DRRParams(preset=args.preset, view=args.view, size=tuple(args.size),
                     pixel_spacing=tuple(args.spacing_mm) if args.spacing_mm else None, sid=args.sid_mm,
                     sad=args.sad_mm, rotation=args.rotation_deg, mode=args.mode, kvp=args.kvp,
                     energy_kev=args.energy_kev, dose=args.dose, seed=int(seed), scatter=on(args.scatter),
                     grid_ratio=args.grid_ratio, detector=on(args.detector), processing=args.processing,
                     cleanup=getattr(args, "cleanup", None))


def job_settings(args: argparse.Namespace, ct: Path, seed: int, formats: tuple[str, ...],
                 hooks: list[ModuleType]) -> dict[str, Any]:
    resolve_preset(args)
    s: dict[str, Any] = {
        "source": str(ct.resolve()), "source_fingerprint": _fingerprint(ct),
        "view": args.view, "size": list(args.size),
        "spacing_mm": list(args.spacing_mm) if args.spacing_mm else None, "kvp": args.kvp, "mode": args.mode,
        "energy_kev": args.energy_kev, "dose": args.dose, "sid_mm": args.sid_mm, "sad_mm": args.sad_mm,
        "rotation_deg": args.rotation_deg, "seed": seed, "formats": list(formats),
    }
    acq = acquisition_settings(args)
    if acq is not None:  # only then: settings of today's renders stay exactly as before (resume check)
        s["acquisition"] = acq
    hs: dict[str, Any] = {}
    for h in hooks:
        if callable(getattr(h, "settings", None)):
            val = h.settings(args)
            if val:
                hs[h.__name__] = val
    if hs:
        s["hooks"] = hs
    return s


def is_done(out_dir: Path, stem: str, formats: tuple[str, ...], settings: dict[str, Any],
            extra: list[Path] = ()) -> bool:
    """True when every output exists and the sidecar records exactly ``settings``."""
    import json

    from dxr_core.io import drr_output_paths
    from dxr_core.io.radiograph import jsonable

    if "json" not in formats:
        return False  # nothing records the settings: render again
    paths = drr_output_paths(out_dir, stem, formats)
    if not all(p.is_file() and p.stat().st_size > 0 for p in list(paths.values()) + list(extra)):
        return False
    try:
        side = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (side.get(SIDECAR_KEY) or {}).get("settings") == jsonable(settings)


def remove_stale_temps(out_dir: Path, stem: str) -> None:
    """Delete temporaries that a killed earlier run left for this stem (``.<stem>.<ext>.*.part*``)."""
    if not out_dir.is_dir():
        return
    from dxr_core.io.radiograph import _EXT

    for ext in _EXT.values():
        for f in out_dir.glob(f".{glob_escape(stem)}{ext}.*.part*"):
            if f.is_file():
                f.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def render_one(job: RenderJob, formats: tuple[str, ...], settings: dict[str, Any],
               hooks: list[ModuleType]) -> dict[str, Path]:
    """Read, (hooks), project, (hooks), write one CT. Raises DXRError on bad input or options."""
    from dxr_core.io import read_ct, write_drr

    from dxr_core.drr import render_drr
    from dxr_core.pipeline import acquisition_of, geometry_of, physics_of

    remove_stale_temps(job.out_dir, job.stem)
    job.params = drr_params(job.args, job.seed)
    job.volume = read_ct(job.ct_path)
    _hook_call(hooks, "before_render", job)
    if job.geometry is None:
        job.geometry = geometry_of(job.volume, job.params)
    if job.physics is None:
        job.physics = physics_of(job.params, option_names="--preset, --mode, --kvp, --energy-kev and --dose")
    try:
        acquisition = acquisition_of(job.params)
    except OptionError as err:
        raise OptionError(f"{err} (check --preset, --scatter, --grid-ratio, --detector and --processing)") from None
    job.drr = render_drr(job.volume, job.geometry, job.physics, seed=job.seed, acquisition=acquisition)
    _hook_call(hooks, "after_render", job)
    extra = {SIDECAR_KEY: {"settings": settings, "stem": job.stem,
                           "extra_outputs": [p.name for p in job.extra_outputs]}}
    extra.update(job.sidecar_extra)
    return write_drr(job.drr, job.out_dir, job.stem, formats, extra_sidecar=extra)


def _check_options(args: argparse.Namespace) -> tuple[str, ...]:
    from dxr_core.io import parse_formats

    formats = parse_formats(args.formats)
    resolve_preset(args)
    if args.grid_ratio is not None and not (0.0 <= args.grid_ratio <= 16.0):
        raise OptionError(f"--grid-ratio {args.grid_ratio:g} is outside 0..16; give 0 (no grid) or e.g. 10 or 12.")
    if args.sid_mm <= args.sad_mm:
        raise OptionError(f"--sid-mm ({args.sid_mm:g}) must be larger than --sad-mm ({args.sad_mm:g}): the detector "
                          "lies beyond the isocentre.")
    if args.energy_kev is not None and args.mode != "mono":
        raise OptionError("--energy-kev applies to --mode mono only; drop it or add --mode mono.")
    if args.stem is not None and args.ct_dir:
        raise OptionError("--stem names the outputs of one --ct; with --ct-dir the names come from the CT files.")
    return formats


def _seed_for(base: int, stem: str, batch: bool) -> int:
    return (int(base) * 1_000_003 + zlib.crc32(stem.encode("utf-8"))) % (2 ** 31) if batch else int(base)


def run_drr(args: argparse.Namespace) -> int:
    formats = _check_options(args)
    hooks = discover_hooks()
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"--out {str(out_dir)!r} is a file; give a folder for the outputs.")
    if args.ct:
        return _run_single(args, Path(args.ct).expanduser(), out_dir, formats, hooks)
    return _run_batch(args, Path(args.ct_dir).expanduser(), out_dir, formats, hooks)


def _run_single(args, ct: Path, out_dir: Path, formats, hooks) -> int:
    if not ct.exists():
        raise InputError(f"CT path {str(ct)!r} does not exist; check the spelling or give an existing DICOM folder "
                         "or NIfTI/NRRD/MHA file.")
    stem = args.stem or _ct_stem(ct)
    seed = _seed_for(args.seed, stem, batch=False)
    settings = job_settings(args, ct, seed, formats, hooks)
    if not args.force and is_done(out_dir, stem, formats, settings,
                                  expected_hook_outputs(hooks, args, out_dir, stem)):
        print(f"{stem}: already done with the same settings (use --force to render again)")
        return 0
    job = RenderJob(args=args, ct_path=ct, out_dir=out_dir, stem=stem, seed=seed)
    written = render_one(job, formats, settings, hooks)
    for p in list(written.values()) + list(job.extra_outputs):
        print(p)
    return 0


def _run_batch(args, root: Path, out_dir: Path, formats, hooks) -> int:
    from tqdm import tqdm

    from dxr_core.io import find_ct_inputs

    cts = find_ct_inputs(root, exclude=[out_dir])
    if not cts:
        raise InputError(f"No CT found under {str(root)!r} (looked for DICOM series folders and "
                         ".nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd files); check the folder.")
    stems: dict[str, Path] = {}
    for ct in cts:
        stem = _ct_stem(ct, root)
        if stem in stems:  # e.g. a.nii.gz and a.nrrd side by side
            stem = f"{stem}_{''.join(ct.suffixes).lstrip('.').replace('.', '_')}"
        stems[stem] = ct
    done = skipped = 0
    failed: list[tuple[Path, str]] = []
    bar = tqdm(stems.items(), total=len(stems), desc="dxr drr", unit="ct", file=sys.stderr,
               disable=os.environ.get("DXR_NO_PROGRESS") == "1")
    for stem, ct in bar:
        bar.set_postfix_str(stem[-30:], refresh=False)
        seed = _seed_for(args.seed, stem, batch=True)
        try:
            settings = job_settings(args, ct, seed, formats, hooks)
            if not args.force and is_done(out_dir, stem, formats, settings,
                                          expected_hook_outputs(hooks, args, out_dir, stem)):
                skipped += 1
                continue
            job = RenderJob(args=args, ct_path=ct, out_dir=out_dir, stem=stem, seed=seed)
            render_one(job, formats, settings, hooks)
            done += 1
        except DXRError as err:
            failed.append((ct, str(err)))
            bar.write(f"dxr drr: {ct}: {err}", file=sys.stderr)
        except (MemoryError, OSError, RuntimeError, ValueError, TypeError, ArithmeticError, LookupError) as err:
            failed.append((ct, f"{type(err).__name__}: {err}".splitlines()[0]))
            bar.write(f"dxr drr: {ct}: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                      file=sys.stderr)
    bar.close()
    print(f"dxr drr: {done} rendered, {skipped} already done, {len(failed)} failed, of {len(stems)} CT(s) "
          f"in {str(root)!r} -> {str(out_dir)!r}")
    if failed:
        print(f"dxr drr: failed ({len(failed)}):", file=sys.stderr)
        for ct, msg in failed:
            print(f"  {ct}: {msg}", file=sys.stderr)
        return 1
    return 0
