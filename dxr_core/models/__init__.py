"""dxr_core.models: network factories (pixel-unshuffle UNet for CPU, MONAI DiffusionModelUNet presets)."""
from dxr_core.models.unet import (DEFAULT_PRESET, PRESETS, ModelConfig, MonaiUNet, PixelUnshuffleUNet, build_model,
                                  count_parameters, get_config)

__all__ = ["DEFAULT_PRESET", "PRESETS", "ModelConfig", "MonaiUNet", "PixelUnshuffleUNet", "build_model",
           "count_parameters", "get_config"]
