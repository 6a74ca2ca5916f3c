"""dxr_core.models"""
