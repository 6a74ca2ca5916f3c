"""The README's main job, `dxr demo`, end to end on the built-in phantom and the shipped weights (small size)."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from conftest import run_dxr
from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS
from dxr_core.io import read_radiograph


def test_demo_end_to_end(tmp_path):
    if not DEFAULT_WEIGHTS.exists():
        pytest.fail(f"shipped DDPM-HQ weights missing at {DEFAULT_WEIGHTS}")
    out = tmp_path / "demo"
    proc = run_dxr("demo", "--out", out, "--size", "128", "--nodules", "1", "--steps", "4", check=True)
    summary = json.loads((out / "summary.json").read_text())
    assert "enhance_skipped" not in summary, summary
    view = summary["views"]["pa"]
    assert view["enhanced_size"] == [256, 256]
    coco = json.loads((out / "pa.coco.json").read_text())
    assert len(coco["annotations"]) == 1 and coco["images"][0]["file_name"] == "pa.png"
    drr, spacing, _ = read_radiograph(out / "pa.dcm")
    hq, hq_spacing, _ = read_radiograph(out / "pa_enhanced.dcm")
    assert drr.shape == (128, 128) and hq.shape == (256, 256)
    assert np.allclose(np.asarray(hq_spacing) * 2, spacing)
    src, enh = pydicom.dcmread(out / "pa.dcm"), pydicom.dcmread(out / "pa_enhanced.dcm")
    assert enh.Modality == "DX" and enh.PatientID == src.PatientID and enh.StudyInstanceUID == src.StudyInstanceUID
    assert enh.SOPInstanceUID != src.SOPInstanceUID
    # the enhanced image is a radiograph of the same anatomy, not noise: it correlates with the upsampled DRR
    up = np.kron(drr, np.ones((2, 2)))
    assert np.corrcoef(up.ravel(), hq.ravel())[0, 1] > 0.9
    assert "done in" in proc.stdout
    # the labels follow the enhanced grid: same nodule, boxes 2x
    hq_coco = json.loads((out / "pa_enhanced.coco.json").read_text())
    assert hq_coco["images"][0]["width"] == 256
    assert hq_coco["annotations"][0]["bbox"] == [2 * v for v in coco["annotations"][0]["bbox"]]
