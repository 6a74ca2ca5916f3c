"""Sampler names and defaults, import-free so the CLI, the MONAI Label app and the trainer share them cheaply."""

SAMPLERS = ("ddim", "dpmpp", "ddpm")
# The default: DDIM (eta 0) at 10 evaluations. On the shipped model's phantom pairs (bench/sampler_quality.py, model
# card) DDIM 10 is +0.36 dB over the full 1000-step ancestral chain and DDIM 20 +0.02 dB; on held-out real
# radiographs fewer evaluations were also better (a fine-tune: 1 evaluation -0.54 dB vs bicubic, 20: -2.74 dB).
# Half the evaluations of 20 halve the enhancement time, which dominates `dxr dataset`.
DEFAULT_SAMPLER = "ddim"
DEFAULT_STEPS = 10
