"""Pure-Python part of the DiffusionXRay Slicer module (no ``slicer`` import): the REST client of the DiffusionXRay
MONAI Label app, LPS <-> RAS geometry glue, and MRML helpers that work on a scene passed in."""
from .client import (  # noqa: F401
    TASK_DRR,
    TASK_ENHANCE,
    DXRClient,
    DXRClientError,
    InferResult,
    ServerError,
    ServerUnreachable,
    decode_multipart,
    encode_multipart,
    error_detail,
    upload_name,
)
from .geometry import (  # noqa: F401
    detector_ijk_to_lps,
    detector_point_lps,
    lps_to_ras,
    nodule_markups,
    project_lps,
    ras_to_lps,
    result_ijk_to_ras,
    split_ijk_to_ras,
)
from .scene import add_nodule_markups, load_result_volume, stored_result, write_volume_node  # noqa: F401
