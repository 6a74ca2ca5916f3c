"""`dxr dataset` end to end on two phantom CTs: valid COCO split by patient, exact label geometry at both scales,
resume after a kill identical to an uninterrupted run, and shards (RANK/WORLD_SIZE) whose merge equals one run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--images-per-ct", "3", "--size", "40", "--steps", "2", "--nodules", "1,2", "--nodule-free", "0.2",
        "--nodule-size-mm", "12,20",
        "--split", "0.5,0,0.5", "--no-progress", "--seed", "5"]


@pytest.fixture(scope="module")
def cts(tmp_path_factory) -> Path:
    import SimpleITK as sitk

    from dxr_core.phantom import make_chest_phantom

    root = tmp_path_factory.mktemp("cts")
    for s in (0, 1):
        sitk.WriteImage(make_chest_phantom(seed=s, spacing_mm=5.0).to_sitk(), str(root / f"patient{s}.nrrd"), True)
    return root


def _run(cts, out, model, extra=(), env=None, wait=True):
    cmd = [sys.executable, "-m", "dxr_core.cli", "dataset", "--ct-dir", str(cts), "--out", str(out),
           "--model", str(model), *ARGS, *extra]
    e = dict(os.environ, **(env or {}))
    if wait:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=e, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc
    return subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _state(out: Path) -> dict:
    """Everything a run produced, timings left out."""
    recs = {}
    for p in sorted((out / "records").glob("*.json")):
        r = json.loads(p.read_text())
        r.pop("seconds")
        recs[p.name] = r
    images = {p.name: p.read_bytes() for p in sorted((out / "images").iterdir())}
    cocos = {s: json.loads((out / f"{s}.json").read_text()) for s in ("train", "val", "test")
             if (out / f"{s}.json").is_file()}
    return {"records": recs, "images": images, "coco": cocos}


@pytest.fixture(scope="module")
def reference(cts, tiny_ddpm_hq_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    _run(cts, out, tiny_ddpm_hq_model)
    return out


def test_coco_splits_labels_and_card(reference):
    recs = [json.loads(p.read_text()) for p in sorted((reference / "records").glob("*.json"))]
    assert len(recs) == 6
    splits = {}
    for split in ("train", "val", "test"):
        coco = json.loads((reference / f"{split}.json").read_text())
        assert {"images", "annotations", "categories", "info"} <= set(coco)
        ids = {im["id"] for im in coco["images"]}
        assert len(ids) == len(coco["images"])
        cats = {c["id"] for c in coco["categories"]}
        by_image = {im["id"]: im for im in coco["images"]}
        for a in coco["annotations"]:
            assert a["image_id"] in ids and a["category_id"] in cats
            im = by_image[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"] and w > 0 and h > 0
            # the label's pixel centre is the image's projection matrix applied to its LPS centre
            P = np.asarray(im["projection_matrix"])
            q = P @ np.r_[a["centre_lps"], 1.0]
            np.testing.assert_allclose(a["centre_px"], q[:2] / q[2], atol=1e-6)
        splits[split] = {im["patient_id"] for im in coco["images"]}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["val"])
    assert splits["train"] and splits["test"]
    n_nodules = 0
    for r in recs:
        assert r["enhanced"] and (r["height"], r["width"]) == (80, 80)  # 2x of 40
        P_lq = np.asarray(r["lq"]["projection_matrix"])
        for lab in r["labels"]:  # the same centre on the LQ grid: c_hq = 2 c_lq + 0.5
            q = P_lq @ np.r_[lab["centre_lps"], 1.0]
            np.testing.assert_allclose(lab["centre_px"], 2 * q[:2] / q[2] + 0.5, atol=1e-6)
            n_nodules += 1
    assert n_nodules > 0
    rows = (reference / "manifest.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("id,file,split,patient_id")
    card = (reference / "README.md").read_text()
    assert "| train |" in card and (reference / "card_histograms.png").stat().st_size > 1000
    assert (reference / "card_montage.png").stat().st_size > 1000


def test_killed_run_resumes_to_the_same_result(cts, tiny_ddpm_hq_model, reference, tmp_path):
    out = tmp_path / "ds"
    proc = _run(cts, out, tiny_ddpm_hq_model, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "records").glob("[!.]*.json"))) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    n_before = len(list((out / "records").glob("[!.]*.json")))
    print(f"killed after {n_before} of 6 images")
    assert n_before < 6, "the run finished before it could be killed"
    # a write the kill interrupted leaves its temporary (as one would, planted here so the check always runs)
    (out / "records" / ".patient0_0001.json.killed.part.json").write_text('{"id": "half')
    (out / "images" / ".patient0_0001.png.killed.part.png").write_bytes(b"half")
    _run(cts, out, tiny_ddpm_hq_model)
    assert not list(out.rglob(".*.part*"))  # the rerun removed what the killed run left half-written
    assert _state(out) == _state(reference)


def test_shards_are_disjoint_and_merge_to_the_single_run(cts, tiny_ddpm_hq_model, reference, tmp_path):
    out = tmp_path / "ds"
    procs = [_run(cts, out, tiny_ddpm_hq_model, env={"RANK": str(r), "WORLD_SIZE": "2"}, wait=False)
             for r in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert not (out / "train.json").exists()  # shards do not merge; the merge step does
    ids = sorted(p.name for p in (out / "records").glob("*.json"))
    assert len(ids) == 6
    proc = subprocess.run([sys.executable, "-m", "dxr_core.cli", "dataset-merge", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _state(out) == _state(reference)


def test_bad_config_is_one_clear_error(cts, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('images_per_ct = 2\ncolour = "blue"\n')
    proc = subprocess.run([sys.executable, "-m", "dxr_core.cli", "dataset", "--ct-dir", str(cts), "--out",
                           str(tmp_path / "o"), "--config", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "colour" in proc.stderr and "Traceback" not in proc.stderr


def test_defaults_follow_the_library():
    from dxr_core.dataset import DatasetConfig
    from dxr_core.drr.presets import DEFAULT_PRESET

    cfg = DatasetConfig()  # sampler / steps None: the enhancer model's own defaults
    assert (cfg.steps, cfg.sampler, cfg.preset) == (None, None, DEFAULT_PRESET)


def test_dxr_enhance_carries_sidecar_and_labels(cts, tiny_ddpm_hq_model, tmp_path):
    """`dxr enhance` of a DRR with its sidecar and COCO file writes both for the enhanced grid."""
    drr_dir, out = tmp_path / "drr", tmp_path / "enh"
    base = [sys.executable, "-m", "dxr_core.cli"]
    proc = subprocess.run(base + ["drr", "--ct", str(cts / "patient0.nrrd"), "--out", str(drr_dir), "--size", "48",
                                  "--formats", "png,json", "--stem", "x", "--nodules", "2", "--nodule-diameter",
                                  "12,18", "--seed", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(base + ["enhance", str(drr_dir / "x.png"), "--out", str(out), "--model",
                                  str(tiny_ddpm_hq_model), "--steps", "2"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lq_coco = json.loads((drr_dir / "x.coco.json").read_text())
    coco = json.loads((out / "x.coco.json").read_text())
    side = json.loads((out / "x.json").read_text())
    assert coco["images"][0]["width"] == 96 and side["geometry"]["size"] == [96, 96]
    P = np.asarray(side["geometry"]["projection_matrix"])
    np.testing.assert_allclose(P, coco["images"][0]["projection_matrix"])
    assert len(coco["annotations"]) == len(lq_coco["annotations"]) > 0
    for a, b in zip(coco["annotations"], lq_coco["annotations"]):
        q = P @ np.r_[a["centre_lps"], 1.0]
        np.testing.assert_allclose(a["centre_px"], q[:2] / q[2], atol=1e-6)
        assert a["bbox"] == [2 * v for v in b["bbox"]] and a["area"] == 4 * b["area"]
