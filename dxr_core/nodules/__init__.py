"""dxr_core.nodules: lung mask, analytic nodule models, 3-D insertion and projected 2-D labels (COCO).

    >>> from dxr_core.nodules import random_nodules, add_nodules_to_drr, to_coco, write_coco
    >>> nods = random_nodules(ct, 2, seed=1)
    >>> drr2, ct2, labels = add_nodules_to_drr(drr, ct, nods, seed=1)   # re-traces only the nodules' boxes
    >>> write_coco("out/x.coco.json", to_coco([("x.png", drr2, labels)]))
"""
from dxr_core.nodules.labels import (
    CATEGORY_IDS,
    add_nodules_to_drr,
    projected_mask,
    read_coco,
    rle_decode,
    rle_encode,
    to_coco,
    visibility,
    write_coco,
)
from dxr_core.nodules.mask import lung_mask
from dxr_core.nodules.models import (
    KINDS,
    SHAPES,
    LungDistance,
    Nodule,
    check_inside_lung,
    insert_nodules,
    nodule_patch,
    random_nodules,
)

__all__ = ["lung_mask", "Nodule", "KINDS", "SHAPES", "LungDistance", "check_inside_lung", "insert_nodules",
           "nodule_patch", "random_nodules", "add_nodules_to_drr", "projected_mask", "visibility", "to_coco",
           "write_coco", "read_coco", "rle_encode", "rle_decode", "CATEGORY_IDS"]
