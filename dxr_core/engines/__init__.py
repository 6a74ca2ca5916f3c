"""dxr_core.engines: PyTorch-Ignite trainers (DDPM-HQ conditional enhancer), resumable and distributed."""
from dxr_core.engines.ddpm_hq import TrainConfig, estimate_residual_scale, read_loss_log, train_ddpm_hq

__all__ = ["TrainConfig", "estimate_residual_scale", "read_loss_log", "train_ddpm_hq"]
