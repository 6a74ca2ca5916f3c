"""What a ``dxr dataset`` run makes: one configuration, from a TOML file and/or flags (flags win).

Example ``dataset.toml`` (every key optional; these are the defaults)::

    images_per_ct = 4          # radiographs per CT
    preset = "pa-chest"        # clinical acquisition + CT clean-up (pa-chest, ap-portable, lateral), or "none"
    views = ["pa"]             # drawn uniformly per image: pa, ap, lateral, rlat
    rotation_deg = [-5, 5]     # pose jitter about the long axis (uniform)
    kvp = [110, 130]           # tube voltage range (uniform)
    dose = [0, 0]              # photons per pixel (uniform; 0 = noise-free)
    size = 512                 # DRR side in pixels (the enhanced image is size * scale)
    nodules = [1, 3]           # nodules per image with nodules (uniform integer)
    nodule_free = 0.2          # share of images without any nodule
    nodule_kinds = []          # [] = the literature mix of dxr_core.nodules (kind x shape x location)
    nodule_size_mm = [6, 20]   # diameter range
    enhance = true             # DDPM-HQ 2x enhancement
    model = "shipped"          # or a checkpoint path
    # sampler = "ddim"         # default: the model's own (its model card)
    # steps = 1                # network evaluations; default: the model's own (1 for the shipped default)
    scale = 2
    formats = ["png"]          # png (16-bit) and/or dcm (DICOM DX)
    split = [0.7, 0.15, 0.15]  # train / val / test shares of the CTs (patients): no patient in two splits
    seed = 0

Every draw is a function of ``seed``, the CT's name and the image index, so a run is reproducible, resumable
and splits into shards that need no communication.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from dxr_core.errors import InputError, OptionError

VIEWS = ("pa", "ap", "lateral", "rlat")
FORMATS = ("png", "dcm")


@dataclass
class DatasetConfig:
    images_per_ct: int = 4
    preset: str = "pa-chest"  # = dxr_core.drr.presets.DEFAULT_PRESET (tested)
    views: list = field(default_factory=lambda: ["pa"])
    rotation_deg: list = field(default_factory=lambda: [-5.0, 5.0])
    kvp: list = field(default_factory=lambda: [110.0, 130.0])
    dose: list = field(default_factory=lambda: [0.0, 0.0])
    size: int = 512
    nodules: list = field(default_factory=lambda: [1, 3])
    nodule_free: float = 0.2
    nodule_kinds: list = field(default_factory=list)
    nodule_size_mm: list = field(default_factory=lambda: [6.0, 20.0])
    enhance: bool = True
    model: str = "shipped"
    sampler: str | None = None  # None: the model's own (Enhancer.default_sampling; tested)
    steps: int | None = None
    scale: float = 2.0
    formats: list = field(default_factory=lambda: ["png"])
    split: list = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0

    def check(self) -> "DatasetConfig":
        def rng(name, lo, hi, integer=False):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise OptionError(f"dataset option {name!r} must be [min, max]; got {v!r}.")
            a, b = (int(x) if integer else float(x) for x in v)
            if not (lo <= a <= b <= hi) or any(isinstance(x, float) and not math.isfinite(x) for x in (a, b)):
                raise OptionError(f"dataset option {name!r} must be [min, max] with {lo} <= min <= max <= {hi}; "
                                  f"got {v!r}.")
            setattr(self, name, [a, b])

        rng("rotation_deg", -180, 180)
        rng("kvp", 20, 150)
        rng("dose", 0, 1e9)
        rng("nodules", 0, 20, integer=True)
        rng("nodule_size_mm", 3, 30)
        if not 1 <= int(self.images_per_ct) <= 10000:
            raise OptionError(f"images_per_ct must be 1..10000; got {self.images_per_ct!r}.")
        if not 16 <= int(self.size) <= 4096:
            raise OptionError(f"size must be 16..4096 pixels; got {self.size!r}.")
        if not 0 <= float(self.nodule_free) <= 1:
            raise OptionError(f"nodule_free must be a share in [0, 1]; got {self.nodule_free!r}.")
        from dxr_core.drr.presets import PRESET_NAMES

        if self.preset not in (*PRESET_NAMES, "none"):
            raise OptionError(f"preset must be one of {', '.join(PRESET_NAMES)} or none; got {self.preset!r}.")
        bad = [v for v in self.views if v not in VIEWS]
        if not self.views or bad:
            raise OptionError(f"views must be a non-empty list of {', '.join(VIEWS)}; got {self.views!r}.")
        bad = [f for f in self.formats if f not in FORMATS]
        if not self.formats or bad:
            raise OptionError(f"formats must be a non-empty list of {', '.join(FORMATS)}; got {self.formats!r}.")
        if len(self.split) != 3 or min(self.split) < 0 or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise OptionError(f"split must be three shares (train, val, test) summing to 1; got {self.split!r}.")
        if (self.steps is not None and not 1 <= int(self.steps) <= 1000) or not 1 <= float(self.scale) <= 4:
            raise OptionError("steps must be 1..1000 and scale 1..4.")
        self.images_per_ct, self.size = int(self.images_per_ct), int(self.size)
        self.steps = None if self.steps is None else int(self.steps)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> "DatasetConfig":
        """Defaults <- TOML file <- overrides (flags); unknown keys are an OptionError naming them."""
        data: dict[str, Any] = {}
        if path:
            import tomllib

            p = Path(path).expanduser()
            try:
                data = tomllib.loads(p.read_text(encoding="utf-8"))
            except OSError:
                raise InputError(f"Dataset config {str(p)!r} cannot be read; give a TOML file.") from None
            except tomllib.TOMLDecodeError as err:
                raise InputError(f"Dataset config {str(p)!r} is not valid TOML ({err}).") from None
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionError(f"Unknown dataset option(s) {', '.join(unknown)}; the options are "
                              f"{', '.join(sorted(known))}.")
        return cls(**data).check()
