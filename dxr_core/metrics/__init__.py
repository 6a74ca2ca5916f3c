"""dxr_core.metrics: PSNR / SSIM / MS-SSIM (full image and inside a lung mask) built on MONAI's metrics."""
from dxr_core.metrics.image import evaluate_folders, format_table, image_metrics, ms_ssim, psnr, ssim

__all__ = ["evaluate_folders", "format_table", "image_metrics", "ms_ssim", "psnr", "ssim"]
