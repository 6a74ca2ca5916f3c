"""argparse value types shared by the ``dxr`` subcommands (comma lists, MIN,MAX ranges, on/off switches)."""
from __future__ import annotations

import argparse
from typing import Callable


def comma_list(text: str) -> list[str]:
    """``a,b,c`` -> ['a', 'b', 'c'] (blanks dropped)."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def min_max(kind: Callable = float, example: str = "MIN,MAX") -> Callable[[str], list]:
    """A type for ``MIN,MAX`` (one value means MIN = MAX) of ``kind`` -> [min, max]; errors quote ``example``."""

    def conv(text: str) -> list:
        try:
            v = [kind(t) for t in comma_list(text)]
        except ValueError:
            v = []
        if len(v) == 1:
            v = v * 2
        if len(v) != 2:
            raise argparse.ArgumentTypeError(f"{text!r} is not {example}")
        return [v[0], v[1]]

    return conv


def on_off(text: str) -> bool:
    v = str(text).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on/off")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v

