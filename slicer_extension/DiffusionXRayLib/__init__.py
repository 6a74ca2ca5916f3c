"""Pure-Python part of the DiffusionXRay Slicer module (no ``slicer`` import): the REST client of the DiffusionXRay
MONAI Label app, LPS <-> RAS geometry glue, and MRML helpers that work on a scene passed in."""
from .client import (  # noqa: F401
    TASK_DRR,
    TASK_ENHANCE,
    Cancelled,
    DXRClient,
    DXRClientError,
    InferResult,
    ServerError,
    ServerUnreachable,
    decode_multipart,
    encode_multipart,
    error_detail,
    file_digest,
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
from .jobs import CANCELLED, DONE, FAILED, RUNNING, BackgroundJob, CTFileCache, JobCancelled  # noqa: F401
from .tasks import VolumeSnapshot, match_labels_to_points, run_request, write_nrrd  # noqa: F401

# the MRML glue needs a vtkMRMLScene (Slicer or PyPI slicer-core) only when called
from .scene import (  # noqa: F401,E402
    PROJECTION_LPS_ATTRIBUTE,
    PROJECTION_RAS_ATTRIBUTE,
    RESULT_ATTRIBUTE,
    add_nodule_markups,
    add_nodule_segmentation,
    enhanced_ijk_to_ras,
    label_matched_points,
    load_result_volume,
    markups_points_lps,
    node_projection_matrix,
    projection_ras,
    rle_decode,
    snapshot_volume,
    stored_result,
    write_volume_node,
)
