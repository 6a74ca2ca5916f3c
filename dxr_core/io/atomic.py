"""Atomic writes: write to a temporary name beside the target, then rename (a killed run leaves no half file)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # read once at import (single-threaded then): os.umask can only be read by setting it
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; finished outputs get the permissions a plain open() would give (0666 & ~umask), so
# other users and services (e.g. a MONAI Label server) can read them
_FILE_MODE = 0o666 & ~_umask()


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Delete what a killed :func:`atomic_path` left for ``path`` (``.NAME.*.part*`` beside it: SIGKILL runs no
    clean-up); returns how many. Call it only where no live writer of the same ``path`` can exist."""
    path = Path(path)
    n = 0
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.part*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    return n


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``, on error delete it.

    The temporary name keeps the target's suffixes so writers that pick a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
