"""Local studies folder that also lists CT DICOM series folders (MONAI Label's own lists only files).

`dxr phantom --dicom --out studies/<name>` writes a series into a sub-folder; each such sub-folder (one that
directly holds DICOM files) becomes one study whose id is the folder name, next to the NIfTI/NRRD/MHA files.
"""
from __future__ import annotations

import logging
import os

from monailabel.datastore.local import LocalDatastore

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def holds_dicom(folder: str, probe: int = 8) -> bool:
    """True when ``folder`` directly holds DICOM files (by suffix or the 'DICM' preamble of a few files)."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return False
    for e in entries[:probe]:
        if e.name.lower().endswith(DICOM_SUFFIXES):
            return True
        try:
            with open(e.path, "rb") as fp:
                fp.seek(128)
                if fp.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


class StudiesDatastore(LocalDatastore):
    """:class:`LocalDatastore` + DICOM series folders as images (read by ``dxr_core.io.read_ct``)."""

    def _list_files(self, path, patterns):
        files = super()._list_files(path, patterns)
        if os.path.realpath(path) != os.path.realpath(self._datastore.image_path()):
            return files  # label folders: files only
        labels = os.path.realpath(self._datastore.label_path(None))
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if not entry.is_dir() or entry.name.startswith(".") or os.path.realpath(entry.path) == labels:
                continue
            if holds_dicom(entry.path):
                files[entry.name] = entry.name
        return files
