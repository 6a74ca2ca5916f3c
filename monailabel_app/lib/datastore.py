"""The studies folder as MONAI Label's local datastore, with ids, tags and writes checked.

What it adds to :class:`monailabel.datastore.local.LocalDatastore`:

- CT DICOM series folders are studies too (id = folder name), next to NIfTI/NRRD/MHA/PNG files;
- an image id or label tag is a plain name (letters, digits, ``._-``, no leading dot, no separators); an id that is
  not listed, or whose file resolves (symlinks included) outside the studies folder, is simply unknown;
- client writes (``add_image``, ``save_label``, ``remove_*``, ``update_*_info``) are refused unless the server was
  started with ``--conf datastore_writes true``; even then every destination is checked to lie inside the folder;
- :meth:`save_result` is the app's own write path (DRR / enhancement results kept beside their CT), independent
  of client writes.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict

from monailabel.datastore.local import LocalDatastore

from dxr_core.errors import DXRError
from dxr_core.io.kinds import holds_dicom

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: the one message for a study that is not there, whatever the reason (unknown, outside, a path): reveals nothing
UNKNOWN_STUDY = "Unknown study: it is not in this server's studies folder; list the study ids with GET /datastore/."


class StudyNotFound(DXRError):
    """The image id names no study of this server (answered 404 with :data:`UNKNOWN_STUDY`)."""

    http_code = 404


class WritesDisabled(DXRError):
    """A client tried to change the datastore of a server started without ``--conf datastore_writes true``."""

    http_code = 403


class BadName(DXRError):
    """An image id or label tag that is not a plain name."""

    http_code = 422


def require_writes(enabled: bool) -> None:
    """:class:`WritesDisabled` (403) unless client writes were switched on with ``--conf datastore_writes true``."""
    if not enabled:
        raise WritesDisabled("This server's datastore is read-only for clients; start it with --conf "
                             "datastore_writes true to allow uploads and changes.")


def valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(NAME_RE.match(name)) and ".." not in name


def inside(path: str, root: str) -> bool:
    """``path`` resolves (symlinks followed) to ``root`` itself or below it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


class StudiesDatastore(LocalDatastore):
    """:class:`LocalDatastore` + DICOM series folders as images, checked ids/tags, opt-in client writes."""

    def __init__(self, *args, writes: bool = False, **kwargs):
        self.writes = bool(writes)
        super().__init__(*args, **kwargs)

    # --- listing -------------------------------------------------------------------------------------------------
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

    @property
    def root(self) -> str:
        return os.path.realpath(self._datastore.image_path())

    # --- reads: ids resolve inside the studies folder or not at all ----------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        if not valid_name(image_id):
            return ""
        uri = super().get_image_uri(image_id)
        if not uri or not os.path.exists(uri) or not inside(uri, self.root):
            return ""
        return uri

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        if not valid_name(label_id) or not valid_name(label_tag):
            return ""
        uri = super().get_label_uri(label_id, label_tag)
        if not uri or not os.path.isfile(uri) or not inside(uri, self.root):
            return ""
        return uri

    def resolve(self, image_id: Any) -> str:
        """The study's real path; :class:`StudyNotFound` (one message for every reason) otherwise."""
        uri = self.get_image_uri(image_id) if isinstance(image_id, str) else ""
        if not uri:
            raise StudyNotFound(UNKNOWN_STUDY)
        return uri

    # --- client writes -------------------------------------------------------------------------------------------
    def _check_write(self, image_id: Any, tag: Any = None, must_exist: bool = True) -> None:
        require_writes(self.writes)
        if not valid_name(image_id):
            raise BadName("An image id must be a plain name (letters, digits, '.', '_', '-'; no path separators, "
                          "no leading dot, no '..').")
        if tag is not None and not valid_name(tag):
            raise BadName("A label tag must be a plain name (letters, digits, '.', '_', '-'; no path separators, "
                          "no leading dot, no '..').")
        if must_exist and not self.get_image_uri(image_id):
            raise StudyNotFound(UNKNOWN_STUDY)

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        self._check_write(image_id, must_exist=False)
        _, ext = self._to_id(os.path.basename(image_filename))
        allowed = sorted({e.replace("*", "") for e in self._extensions})
        if ext.lower() not in allowed:
            raise BadName(f"A study must be one of the image types {', '.join(allowed)} (got {ext or 'no suffix'!r}); "
                          "a DICOM series is added as a folder on the server.")
        if not inside(os.path.join(self.root, self._filename(image_id, ext)), self.root):
            raise BadName("The image id and file name must name a file inside the studies folder.")
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        self._check_write(image_id)
        return super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        self._check_write(image_id, label_tag)
        return self._save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self._check_write(label_id, label_tag)
        return super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        self._check_write(image_id)
        return super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        self._check_write(label_id, label_tag)
        return super().update_label_info(label_id, label_tag, info)

    # --- the app's own results -----------------------------------------------------------------------------------
    def _save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        _, ext = self._to_id(os.path.basename(label_filename))
        dest = os.path.join(self._datastore.label_path(label_tag), self._filename(image_id, ext))
        if not inside(dest, self.root):
            raise BadName("A label must be written inside the studies folder.")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def save_result(self, image_id: str, result_file: str, tag: str, info: Dict[str, Any]) -> str:
        """Keep a task's result (an NRRD) as label ``tag`` of study ``image_id``; ``info`` is its JSON."""
        if not (valid_name(image_id) and valid_name(tag)) or not self.get_image_uri(image_id):
            raise StudyNotFound(UNKNOWN_STUDY)
        return self._save_label(image_id, result_file, tag, info)
