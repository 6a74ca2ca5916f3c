"""Server options given as ``monailabel start_server ... --conf KEY VALUE``.

Every value arrives as a string; this module parses and checks them once at start-up so that a typo stops the
server with a sentence naming the option, instead of failing on the first request.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

logger = logging.getLogger(__name__)

#: name of the fine-tuned checkpoint the training task writes into ``model_dir``
FINETUNED_NAME = "ddpm_hq_finetuned.pt"


class ConfigError(ValueError):
    """A ``--conf`` option has an unusable value (the server refuses to start)."""


#: numeric --conf keys: (key, parser, lowest, highest)
_NUMBERS = (("steps", "int", 1, 100000), ("max_size", "int", 16, 16384), ("max_steps", "int", 1, 100000),
            ("ct_cache", "int", 0, 64), ("max_work", "float", 0.001, 1e6), ("max_seconds", "float", 0.1, 86400.0),
            ("workers", "int", 1, 64), ("max_queue", "int", 0, 10000), ("max_upload_mb", "float", 0.001, 65536.0))


@dataclass
class AppConfig:
    model_path: str | None = None  # explicit DDPM-HQ checkpoint; None: fine-tuned one in model_dir, else shipped
    model_dir: str = ""  # where `/train/ddpm_hq_finetune` publishes its checkpoint (and keeps its runs)
    work_dir: str = ""  # the app's private scratch folder: uploads and results in flight (emptied at start-up)
    device: str = "cpu"  # torch device for enhancement and training
    sampler: str | None = None  # default sampler; None: the enhancer's own default
    steps: int | None = None  # default number of sampler steps; None: the enhancer's own default
    max_size: int = 2048  # largest detector side (pixels) a request may ask for
    max_steps: int = 100  # most network evaluations one enhancement may run
    max_work: float = 200.0  # most (network evaluations x output megapixels) one enhancement may cost
    max_seconds: float = 300.0  # an inference running longer is cancelled (its worker is replaced) and answered 504
    workers: int = 1  # inference worker processes (each holds its own model and CT cache)
    max_queue: int = 8  # requests waiting for a worker beyond the running ones; more are answered 503
    max_upload_mb: float = 1024.0  # largest request body (uploaded file + params) in MiB; larger: 413
    datastore_writes: bool = False  # allow clients to add/replace/remove studies and labels (PUT/DELETE /datastore)
    save_results: bool = True  # keep each DRR / enhanced result of a study (NRRD + JSON) as a label of that study
    ct_cache: int = 2  # CT volumes kept in memory between requests, per worker (0: none)
    extra: dict[str, str] = field(default_factory=dict)  # other --conf keys (MONAI Label's own, e.g. server_mode)

    KEYS = ("model_path", "model_dir", "work_dir", "device", "sampler", "steps", "max_size", "max_steps", "max_work",
            "max_seconds", "workers", "max_queue", "max_upload_mb", "datastore_writes", "save_results", "ct_cache")

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None, app_dir: str) -> "AppConfig":
        conf = dict(conf or {})
        cfg = cls(model_dir=os.path.join(app_dir, "model"), work_dir=os.path.join(app_dir, "work"))
        if conf.get("model_path"):
            cfg.model_path = os.path.abspath(os.path.expanduser(str(conf["model_path"])))
            if not os.path.isfile(cfg.model_path):
                raise ConfigError(
                    f"--conf model_path {conf['model_path']!r} is not a file; give the path of a DDPM-HQ checkpoint "
                    "(.pt) or leave the option out to use the shipped weights."
                )
        if conf.get("model_dir"):
            cfg.model_dir = os.path.abspath(os.path.expanduser(str(conf["model_dir"])))
        if conf.get("work_dir"):
            cfg.work_dir = os.path.abspath(os.path.expanduser(str(conf["work_dir"])))
        cfg.device = _device(str(conf.get("device", "auto")))
        if conf.get("sampler"):
            cfg.sampler = str(conf["sampler"]).strip().lower()
        for key, conv, lo, hi in _NUMBERS:
            if conf.get(key) not in (None, ""):
                setattr(cfg, key, (_int if conv == "int" else _float)(conf, key, lo, hi))
        for key in ("datastore_writes", "save_results"):
            if conf.get(key) not in (None, ""):
                setattr(cfg, key, _bool(conf, key))
        if cfg.steps is not None and cfg.steps > cfg.max_steps:
            raise ConfigError(f"--conf steps {cfg.steps} is above --conf max_steps {cfg.max_steps}; lower one of them.")
        cfg.extra = {k: str(v) for k, v in conf.items() if k not in cls.KEYS}
        return cfg

    def finetuned_path(self) -> str:
        return os.path.join(self.model_dir, FINETUNED_NAME)

    def model_paths(self) -> dict[str, str]:
        """Server path of each enhancement model id, in serving order: "conf" (--conf model_path, when given),
        "finetuned" (published by /train), "shipped" (dxr_core/weights)."""
        from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS

        ids = {"conf": self.model_path} if self.model_path else {}
        return {**ids, "finetuned": self.finetuned_path(), "shipped": str(DEFAULT_WEIGHTS)}

    def served_model(self) -> tuple[str | None, str | None]:
        """(id, path) of the model ``drr_enhance`` serves now: the first installed one of :meth:`model_paths`."""
        for model_id, path in self.model_paths().items():
            if os.path.isfile(path):
                return model_id, path
        return None, None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_dict(self) -> dict[str, Any]:
        """Every option (server paths included): for the server's own log and the worker processes."""
        return {k: getattr(self, k) for k in self.KEYS}

    def public_dict(self) -> dict[str, Any]:
        """The options a client may see (``/info``): no server paths."""
        out = self.to_dict()
        out["model_path"] = "set" if self.model_path else None
        out.pop("model_dir")
        out.pop("work_dir")
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AppConfig":
        """Inverse of :meth:`to_dict` (already parsed values; used to hand the options to worker processes)."""
        return cls(**{k: d[k] for k in cls.KEYS if k in d})


def _int(conf: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    raw = conf[key]
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"--conf {key} must be a whole number between {lo} and {hi}; got {raw!r}.") from None
    if not lo <= value <= hi:
        raise ConfigError(f"--conf {key} must be between {lo} and {hi}; got {value}.")
    return value


def _float(conf: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    raw = conf[key]
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:  # also refuses nan
        raise ConfigError(f"--conf {key} must be a number between {lo:g} and {hi:g}; got {raw!r}.")
    return value


def _bool(conf: Mapping[str, Any], key: str) -> bool:
    raw = str(conf[key]).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"--conf {key} must be true or false; got {conf[key]!r}.")


def _device(name: str) -> str:
    import torch

    name = name.strip().lower()
    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--conf device {name} was asked for but no CUDA GPU is visible; use --conf device cpu (or auto)."
            )
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--conf device {name}: only {torch.cuda.device_count()} GPU(s) are visible; pick one of "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
        return name
    raise ConfigError(f"--conf device must be auto, cpu, cuda or cuda:N; got {name!r}.")
