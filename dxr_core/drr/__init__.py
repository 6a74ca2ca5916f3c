"""dxr_core.drr: cone-beam geometry, X-ray physics, Joseph projector and DRR rendering.

Public API: make_geometry, ConeBeamGeometry, Physics, hu_to_mu, project, render_drr, DRR, add_volume_delta;
acquisition realism (opt-in): Acquisition and its steps, the chest presets (get_preset, preset_geometry,
preset_physics, preset_acquisition); see docs/drr_physics.md.
"""
# Lazy exports (scientific-python"s lazy_loader, as scikit-image does): `dxr --help` and the drivers"
# discovery import this package without paying for torch until a name is used.
import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "geometry": ["VIEWS", "ConeBeamGeometry", "make_geometry"],
        "physics": ["Physics", "hu_to_basis", "hu_to_mu", "physics_from_options"],
        "projector": ["project"],
        "render": ["DRR", "add_volume_delta", "apply_physics", "primary_transmission", "projected_box", "render_drr"],
        "acquisition": ["Acquisition", "AntiScatterGrid", "DetectorModel", "Processing", "ScatterModel",
                        "apply_acquisition", "chest_region_masks", "spr_by_region"],
        "presets": ["PRESETS", "PRESET_NAMES", "get_preset", "preset_acquisition", "preset_geometry",
                    "preset_physics"],
    },
)
