"""dxr_core.metrics: PSNR / SSIM / MS-SSIM (full image and inside a lung mask) built on MONAI's metrics, and
unpaired domain-gap measures between image sets (:mod:`dxr_core.metrics.domain`)."""
from dxr_core.metrics.domain import domain_gap, domain_gap_folders
from dxr_core.metrics.image import evaluate_folders, format_table, image_metrics, ms_ssim, psnr, ssim

__all__ = ["domain_gap", "domain_gap_folders", "evaluate_folders", "format_table", "image_metrics", "ms_ssim", "psnr",
           "ssim"]
