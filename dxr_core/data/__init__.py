"""dxr_core.data"""
