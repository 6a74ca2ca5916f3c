"""dxr_core.degrade"""
