"""dxr_core.engines"""
