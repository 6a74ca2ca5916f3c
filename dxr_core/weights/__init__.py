"""dxr_core.weights"""
