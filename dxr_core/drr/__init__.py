"""dxr_core.drr: cone-beam geometry, X-ray physics, Joseph projector and DRR rendering.

Public API: make_geometry, ConeBeamGeometry, Physics, hu_to_mu, project, render_drr, DRR, add_volume_delta.
"""
from dxr_core.drr.geometry import VIEWS, ConeBeamGeometry, make_geometry
from dxr_core.drr.physics import Physics, hu_to_basis, hu_to_mu
from dxr_core.drr.projector import project
from dxr_core.drr.render import DRR, add_volume_delta, apply_physics, projected_box, render_drr

__all__ = ["ConeBeamGeometry", "make_geometry", "VIEWS", "Physics", "hu_to_mu", "hu_to_basis", "project",
           "render_drr", "DRR", "add_volume_delta", "apply_physics", "projected_box"]
