"""dxr_core.weights: the shipped model files, each beside its model card (``<name>.md``)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def shipped(prefix: str) -> Path | None:
    """The shipped ``<prefix>*.pt`` that has its ``.md`` model card beside it (the first by name), or None."""
    found = sorted(p for p in WEIGHTS_DIR.glob(f"{prefix}*.pt") if p.with_suffix(".md").is_file())
    return found[0] if found else None
