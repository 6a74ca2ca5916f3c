"""Nodule labels (pixel geometry of one DRR) -> the same labels on a resampled (e.g. 2x enhanced) pixel grid."""
from __future__ import annotations

from typing import Any


def rescale_label(label: Any, sy: float, sx: float) -> Any:
    """Placeholder until the nodule label format is final: labels are returned unchanged, marked as LQ-grid."""
    if isinstance(label, dict):
        out = dict(label)
        out["pixel_grid"] = "lq"
        return out
    return label
