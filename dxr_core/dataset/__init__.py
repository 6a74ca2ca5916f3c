"""dxr_core.dataset: ``dxr dataset`` - a labelled, enhanced nodule-detection dataset from a folder of CTs.

    >>> from dxr_core.dataset import DatasetConfig, build, merge
    >>> cfg = DatasetConfig.load("dataset.toml")
    >>> build("cts/", "out/", cfg, rank=0, world=1); merge("out/")
"""
from dxr_core.dataset.builder import build, merge, plan, shard_from_env
from dxr_core.dataset.config import DatasetConfig

__all__ = ["DatasetConfig", "build", "merge", "plan", "shard_from_env"]
