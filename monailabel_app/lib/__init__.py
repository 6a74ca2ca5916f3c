"""DiffusionXRay MONAI Label app library: configs (server options), infers (tasks), trainers."""
