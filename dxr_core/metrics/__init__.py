"""dxr_core.metrics"""
