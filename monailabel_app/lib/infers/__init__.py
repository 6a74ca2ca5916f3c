from .drr import DRRTask
from .enhance import EnhanceTask

__all__ = ["DRRTask", "EnhanceTask"]
