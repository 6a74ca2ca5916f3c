"""dxr_core.phantom"""
