"""dxr_core.nodules: lung mask, analytic nodule models, 3-D insertion and projected 2-D labels (COCO).

    >>> from dxr_core.nodules import random_nodules, add_nodules_to_drr, to_coco, write_coco
    >>> nods = random_nodules(ct, 2, seed=1)
    >>> drr2, ct2, labels = add_nodules_to_drr(drr, ct, nods, seed=1)   # re-traces only the nodules" boxes
    >>> write_coco("out/x.coco.json", to_coco([("x.png", drr2, labels)]))
"""
# Lazy exports (scientific-python"s lazy_loader, as scikit-image does): `dxr --help` and the drivers"
# discovery import this package without paying for torch until a name is used.
import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "labels": ["CATEGORY_IDS", "add_nodules_to_drr", "projected_mask", "read_coco", "rle_decode", "rle_encode",
            "to_coco", "visibility", "detectability", "write_coco"],
        "observer": ["background_nps", "npw_dprime"],
        "mask": ["lung_mask"],
        "rescale": ["rescale_coco", "rescale_label", "rescale_labels", "rescale_projection", "rescale_sidecar",
            "scale_matrix"],
        "models": ["KINDS", "SHAPES", "LOCATIONS", "LOCATION_MIX", "KIND_PRIOR", "SHAPE_GIVEN_KIND", "IMPOSSIBLE",
            "LungDistance", "Nodule", "check_inside_lung", "ct_psf_sigma_mm", "fissure_distance", "insert_nodules",
            "joint_distribution", "nodule_patch", "random_nodules"],
    },
)
