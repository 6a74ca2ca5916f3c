"""dxr_core.nodules"""
