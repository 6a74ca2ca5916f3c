"""dxr_core.io: CT in (DICOM series, NIfTI, NRRD, MHA) -> Volume; radiographs out/in (DICOM DX, PNG, NRRD, JSON).

Public API:
- ``read_ct(path) -> Volume`` and ``find_ct_inputs(root) -> list[Path]``
- ``write_drr(drr, out_dir, stem, formats=("dcm", "png", "nrrd", "json"), extra_sidecar=None) -> {fmt: Path}``
- ``read_radiograph(path) -> (image float32 [0, 1], pixel_spacing_mm (row, col) | None, meta)``
- ``write_radiograph(image, spacing, path, template_meta=None, description=None) -> Path``
- ``write_ct_series(volume, out_dir, tags=None, ...) -> list[Path]`` (CT Image Storage series)
- ``build_dx_dataset`` / ``write_dx`` (DICOM DX For Presentation)
All writes go through :mod:`dxr_core.io.atomic`.
"""
from dxr_core.io.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from dxr_core.io.ct import find_ct_inputs, read_ct
from dxr_core.io.dicom import build_dx_dataset, write_ct_series, write_dx
from dxr_core.io.radiograph import (
    FORMATS,
    drr_output_paths,
    dumps_json,
    parse_formats,
    read_radiograph,
    write_drr,
    write_radiograph,
)

__all__ = [
    "atomic_path", "write_bytes_atomic", "write_text_atomic", "read_ct", "find_ct_inputs", "write_ct_series",
    "build_dx_dataset", "write_dx", "write_drr", "read_radiograph", "write_radiograph", "FORMATS",
    "drr_output_paths", "dumps_json", "parse_formats",
]
