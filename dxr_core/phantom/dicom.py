"""Write the phantom (a Volume in HU) as a CT Image Storage DICOM series: :func:`dxr_core.io.write_ct_series`
with the phantom's tags.

Stored values are unsigned 16-bit ``HU + 1024`` with RescaleIntercept -1024 / RescaleSlope 1 (clipped to
-1024..64511 HU), as many scanners do. UIDs derive from the volume (patient id, shape, spacing), so writing the
same phantom twice gives the same series. The whole folder is written under a temporary name and renamed into
place, so a killed run leaves either the old folder or the complete new series.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dxr_core.volume import Volume


def write_dicom_series(volume: Volume, folder, series_description: str | None = None,
                       seed_uid: str | None = None) -> Path:
    from dxr_core.io.dicom import write_ct_series

    meta = volume.meta or {}
    key = seed_uid or f"{meta.get('PatientID', 'DXR')}-{volume.array.shape}-{volume.spacing}"
    tags = {
        "ImageType": ["DERIVED", "SECONDARY", "AXIAL"], "ManufacturerModelName": "dxr phantom",
        "PatientName": str(meta.get("PatientName", "DXR^Phantom")), "PatientID": str(meta.get("PatientID",
                                                                                              "DXR-PHANTOM")),
        "PatientSex": str(meta.get("PatientSex", "O")), "PatientPosition": str(meta.get("PatientPosition", "HFS")),
        "StudyDescription": str(meta.get("StudyDescription", "DiffusionXRay phantom")),
        "SeriesDescription": series_description or str(meta.get("SeriesDescription", "Chest phantom")),
        "BodyPartExamined": "CHEST", "WindowCenter": "-600", "WindowWidth": "1500",
    }
    clipped = volume.with_array(np.clip(volume.array, -1024.0, 64511.0))
    write_ct_series(clipped, folder, tags=tags, uid_seed=key, replace_folder=True,
                    file_names=[f"CT{k + 1:04d}.dcm" for k in range(volume.array.shape[0])])
    return Path(folder)
