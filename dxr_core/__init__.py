"""DiffusionXRay core library: chest CT -> DRR -> realistic enhanced radiograph.

Drivers (``dxr`` CLI, MONAI Label app, Slicer module) call the public functions here; nothing in
``dxr_core`` imports a driver.
"""
from dxr_core.errors import DXRError, GeometryError, InputError, ModelError, OptionError
from dxr_core.volume import Volume

__version__ = "0.1.0"
__all__ = ["DXRError", "GeometryError", "InputError", "ModelError", "OptionError", "Volume", "__version__"]
