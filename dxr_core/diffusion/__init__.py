"""dxr_core.diffusion"""
