"""Error classes: every bad input raises one of these with a sentence a user can act on.

The CLI prints ``str(err)`` and exits non-zero without a traceback; servers answer 4xx with it.
"""
from __future__ import annotations


class DXRError(Exception):
    """Base class: the message names the problem and the fix."""

    exit_code = 2


class InputError(DXRError):
    """Input data is missing, unreadable, corrupt or of the wrong kind (e.g. not a CT)."""


class GeometryError(DXRError):
    """Impossible or inconsistent projection geometry (e.g. SID < SAD, zero detector size)."""


class OptionError(DXRError):
    """An option value is unknown or out of range."""


class ModelError(DXRError):
    """A model checkpoint is missing or incompatible."""
