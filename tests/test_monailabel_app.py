"""The MONAI Label app served by a real `monailabel start_server` process on 127.0.0.1.

One server for the module (studies folder made from the phantom: a NRRD volume, the same CT as a DICOM series, a
radiograph, a corrupt file); requests go through MONAI Label's own client and through plain HTTP.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("monailabel")
psutil = pytest.importorskip("psutil")
sitk = pytest.importorskip("SimpleITK")

from monailabel.client import MONAILabelClient  # noqa: E402
from monailabel.client.client import MONAILabelClientException  # noqa: E402
from requests_toolbelt.multipart.decoder import MultipartDecoder  # noqa: E402

from monailabel_server import ROOT, MonaiLabelServer  # noqa: E402

DRR_PARAMS = {"view": "pa", "size": [48, 64], "seed": 3, "kvp": 100}


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------
def _weights_installed() -> bool:
    from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS.is_file()


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    from dxr_core.io.radiograph import write_radiograph
    from dxr_core.phantom import make_chest_phantom, write_dicom_series

    root = tmp_path_factory.mktemp("studies")
    ct = make_chest_phantom(seed=0, spacing_mm=5.0)  # 71 x 50 x 64 voxels: fast DRRs
    sitk.WriteImage(ct.to_sitk(), str(root / "phantom.nrrd"), True)
    write_dicom_series(ct, root / "phantom_dicom")  # what `dxr phantom --dicom` writes: a CT series folder
    yy, xx = np.mgrid[0:40, 0:48]
    write_radiograph((0.3 + 0.4 * np.exp(-((yy - 20) ** 2 + (xx - 24) ** 2) / 200.0)).astype(np.float32),
                     (0.5, 0.5), root / "chest_xray.png")
    (root / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a NIfTI volume" * 3)
    return root


@pytest.fixture(scope="module")
def server(studies, tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    srv = MonaiLabelServer(studies, work, conf={"model_dir": str(work / "model"), "max_size": "1024"})
    srv.start()
    yield srv
    srv.stop()
    assert srv.proc.poll() is not None


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


def _infer_http(server, model: str, image: str = "", params: dict | None = None, files: dict | None = None,
                timeout: float = 120):
    return requests.post(f"{server.url}/infer/{model}", params={"image": image} if image else {},
                         data={"params": json.dumps(params or {})}, files=files, timeout=timeout)


def _split_multipart(resp) -> tuple[dict, bytes]:
    """MONAI Label answers multipart/form-data: a 'params' JSON part and an 'image' file part."""
    parts = MultipartDecoder(resp.content, resp.headers["content-type"]).parts
    out, image = {}, b""
    for part in parts:
        disp = part.headers.get(b"Content-Disposition", b"").decode()
        if 'name="params"' in disp:
            out = json.loads(part.content)
        elif 'name="image"' in disp:
            image = part.content
    return out, image


def _read_nrrd_bytes(data: bytes, tmp: Path):
    p = tmp / f"r{time.time_ns()}.nrrd"
    p.write_bytes(data)
    return sitk.ReadImage(str(p))


def _cli_drr(ct: Path, out: Path, params: dict) -> tuple[np.ndarray, dict]:
    rows, cols = params["size"]
    cmd = [sys.executable, "-m", "dxr_core.cli", "drr", "--ct", str(ct), "--out", str(out), "--view", params["view"],
           "--size", f"{rows}x{cols}", "--seed", str(params["seed"]), "--kvp", str(params["kvp"]),
           "--formats", "nrrd,json", "--stem", "cli"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "cli.nrrd")))
    return img, json.loads((out / "cli.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# (1) info and the two tasks through MONAI Label's client and plain HTTP
# ----------------------------------------------------------------------------------------------------------------
def test_info_lists_both_tasks(server, client):
    info = client.info()
    assert {"drr", "drr_enhance"} <= set(info["models"])
    assert "ddpm_hq_finetune" in info["trainers"]
    plain = requests.get(f"{server.url}/info/", timeout=10).json()
    assert set(plain["models"]) == set(info["models"])
    ids = set(requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=10).json()["objects"])
    assert {"phantom", "phantom_dicom", "chest_xray", "corrupt"} <= ids


def test_drr_client_matches_cli(server, client, studies, tmp_path):
    image_out, result = client.infer("drr", "phantom", dict(DRR_PARAMS))
    img = sitk.ReadImage(image_out)
    rows, cols = DRR_PARAMS["size"]
    assert img.GetSize() == (cols, rows)  # ITK (x = cols, y = rows)
    ps = result["image"]["pixel_spacing_mm"]
    assert result["image"]["size"] == [rows, cols]
    np.testing.assert_allclose(img.GetSpacing(), (ps[1], ps[0]), rtol=1e-6)
    assert np.asarray(result["projection_matrix"]).shape == (3, 4)

    cli_img, sidecar = _cli_drr(studies / "phantom.nrrd", tmp_path / "cli", DRR_PARAMS)
    arr = sitk.GetArrayFromImage(img)
    assert arr.dtype == np.float32 and arr.shape == cli_img.shape
    np.testing.assert_allclose(arr, cli_img, atol=1e-6)
    np.testing.assert_allclose(result["projection_matrix"], sidecar["geometry"]["projection_matrix"], rtol=1e-9)
    np.testing.assert_allclose(ps, sidecar["geometry"]["pixel_spacing_mm"], rtol=1e-9)
    assert 0.0 <= arr.min() and arr.max() <= 1.0 and arr.std() > 0.01


def test_drr_plain_http_uint16_and_explicit_spacing(server, tmp_path):
    params = {"view": "lateral", "size": 40, "pixel_spacing": 9.0, "output_dtype": "uint16", "seed": 1}
    r = _infer_http(server, "drr", "phantom", params)
    assert r.status_code == 200, r.text
    result, data = _split_multipart(r)
    img = _read_nrrd_bytes(data, tmp_path)
    assert img.GetSize() == (40, 40) and img.GetSpacing() == (9.0, 9.0)
    assert img.GetPixelID() == sitk.sitkUInt16
    assert result["image"]["dtype"] == "uint16" and result["geometry"]["view"] == "lateral"
    # JSON only
    r = requests.post(f"{server.url}/infer/drr", params={"image": "phantom", "output": "json"},
                      data={"params": json.dumps(params)}, timeout=60)
    assert r.status_code == 200 and r.json()["image"]["pixel_spacing_mm"] == [9.0, 9.0]


def test_drr_uploaded_ct_matches_study(server, studies, tmp_path):
    r = _infer_http(server, "drr", params=DRR_PARAMS,
                    files={"file": ("ct.nrrd", (studies / "phantom.nrrd").read_bytes())})
    assert r.status_code == 200, r.text
    up = sitk.GetArrayFromImage(_read_nrrd_bytes(_split_multipart(r)[1], tmp_path))
    r = _infer_http(server, "drr", "phantom", DRR_PARAMS)
    ref = sitk.GetArrayFromImage(_read_nrrd_bytes(_split_multipart(r)[1], tmp_path))
    np.testing.assert_array_equal(up, ref)


def test_drr_dicom_series_study_matches_volume_study(client):
    a, _ = client.infer("drr", "phantom", dict(DRR_PARAMS))
    b, rb = client.infer("drr", "phantom_dicom", dict(DRR_PARAMS))
    ia, ib = (sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in (a, b))
    assert ia.shape == ib.shape
    np.testing.assert_allclose(ib, ia, atol=2e-3)  # the series stores HU as int16: rounding only


def test_drr_with_nodules_matches_cli_labels(client, studies, tmp_path):
    params = dict(DRR_PARAMS, nodules=2, nodule_size=[8, 12], nodule_seed=5)
    image_out, result = client.infer("drr", "phantom", params)
    labels = result["nodules"]
    assert len(labels) == 2
    for lab in labels:
        for key in ("bbox", "centre_px", "centre_lps", "segmentation", "visibility", "category"):
            assert key in lab, f"label lacks {key}: {json.dumps(lab)[:300]}"
        assert lab["segmentation"]["size"] == DRR_PARAMS["size"]
    # the same request on the command line: same pixels, same labels
    out = tmp_path / "cli"
    rows, cols = DRR_PARAMS["size"]
    cmd = [sys.executable, "-m", "dxr_core.cli", "drr", "--ct", str(studies / "phantom.nrrd"), "--out", str(out),
           "--size", f"{rows}x{cols}", "--seed", "3", "--kvp", "100", "--formats", "nrrd,json", "--stem", "cli",
           "--nodules", "2", "--nodule-diameter", "8,12", "--nodule-seed", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(image_out)),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(out / "cli.nrrd"))), atol=1e-6)
    coco = json.loads((out / "cli.coco.json").read_text())
    for lab, ann in zip(labels, coco["annotations"]):
        assert lab["bbox"] == ann["bbox"] and lab["segmentation"] == ann["segmentation"]
        np.testing.assert_allclose(lab["centre_px"], ann["centre_px"], atol=1e-9)
    # a nodule outside the CT is refused with the reason
    r = _infer_http_client_free(client, {"nodule_points": [[0, 0, 5000]]})
    assert r.status_code == 422 and "outside the CT" in r.json()["detail"]


def _infer_http_client_free(client, params):
    return requests.post(f"{client.get_server_url()}/infer/drr", params={"image": "phantom"},
                         data={"params": json.dumps(dict(DRR_PARAMS, **params))}, timeout=60)


def test_drr_enhance_or_clear_no_model_error(server, client, tmp_path):
    params = dict(DRR_PARAMS, size=[24, 32], steps=2, sampler="ddim")
    if not _weights_installed():
        r = _infer_http(server, "drr_enhance", "phantom", params)
        assert r.status_code == 404, r.text
        assert "No DDPM-HQ enhancement model is installed" in r.json()["detail"]
        with pytest.raises(MONAILabelClientException) as err:
            client.infer("drr_enhance", "phantom", params)
        assert "404" in err.value.msg and "model" in err.value.msg
        return
    image_out, result = client.infer("drr_enhance", "phantom", params)
    img = sitk.ReadImage(image_out)
    assert img.GetSize() == (64, 48)
    lq = result["lq"]["pixel_spacing_mm"]
    np.testing.assert_allclose(img.GetSpacing(), (lq[1] / 2, lq[0] / 2), rtol=1e-6)
    # an uploaded radiograph -> enhanced 2x with half the spacing
    r = _infer_http(server, "drr_enhance", params={"steps": 2, "sampler": "ddim"},
                    files={"file": ("xray.png", _png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    res, data = _split_multipart(r)
    up = _read_nrrd_bytes(data, tmp_path)
    assert up.GetSize() == (96, 80) and res["image"]["size"] == [80, 96]


def _png_bytes() -> bytes:
    from dxr_core.io.radiograph import write_radiograph

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.png"
        write_radiograph(np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48), (0.5, 0.5), p)
        return p.read_bytes()


# ----------------------------------------------------------------------------------------------------------------
# (2) bad requests: 4xx with a sentence, and the server keeps serving
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model,image,params,upload,code,words",
    [
        ("drr", "no_such_study", {}, None, 404, "Unknown study"),
        ("drr", "", {}, ("scan.png", "png"), 400, "not a CT"),
        ("drr", "", {}, ("ct.nii.gz", "garbage"), 400, "corrupt"),
        ("drr", "", {}, ("slice.dcm", "slice"), 400, "slice"),
        ("drr", "corrupt", {}, None, 400, "corrupt"),
        ("drr", "chest_xray", {}, None, 400, "not a CT"),
        ("drr", "phantom", {"size": 100000}, None, 422, "size"),
        ("drr", "phantom", {"size": "big"}, None, 422, "size"),
        ("drr", "phantom", {"kvp": 500}, None, 422, "kvp"),
        ("drr", "phantom", {"view": "oblique"}, None, 422, "view"),
        ("drr", "phantom", {"preset": "xray"}, None, 422, "preset"),
        ("drr", "phantom", {"cleanup": "couch"}, None, 422, "cleanup"),
        ("drr", "phantom", {"grid_ratio": 40}, None, 422, "grid_ratio"),
        ("drr", "phantom", {"sad": 2000, "sid": 1500}, None, 422, "sad"),
        ("drr", "phantom", {"nodule_points": [[1, 2]]}, None, 422, "nodule_points"),
        ("drr_enhance", "phantom", {"sampler": "euler"}, None, None, "sampler"),
        ("drr_enhance", "phantom", {"steps": 0}, None, None, "steps"),
        ("drr_enhance", "phantom", {"temperature": 1.5}, None, None, "temperature"),
        ("no_such_task", "phantom", {}, None, 404, "no_such_task"),
    ],
)
def test_bad_requests_get_4xx_with_message(server, studies, model, image, params, upload, code, words):
    files = None
    if upload:
        name, kind = upload
        data = {"png": _png_bytes, "slice": lambda: sorted((studies / "phantom_dicom").iterdir())[10].read_bytes(),
                "garbage": lambda: b"\x00\x01garbage" * 50}[kind]()
        files = {"file": (name, data)}
    r = _infer_http(server, model, image, params, files=files)
    if code is None:  # enhancement: 422 when a model is installed, else the no-model 404 comes first
        code = 422 if _weights_installed() else 404
        words = words if _weights_installed() else "No DDPM-HQ"
    assert r.status_code == code, r.text
    detail = r.json()["detail"]
    assert words.lower() in detail.lower(), detail
    assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200


def test_server_still_serves_after_errors(server, client):
    r = _infer_http(server, "drr", "nope", {})
    assert 400 <= r.status_code < 500
    image_out, result = client.infer("drr", "phantom", {"size": 32})
    assert sitk.ReadImage(image_out).GetSize() == (32, 32)
    with pytest.raises(MONAILabelClientException) as err:
        client.infer("drr", "phantom", {"size": -1})
    assert "422" in err.value.msg and "size" in err.value.msg
    r = requests.post(f"{server.url}/train/no_such_trainer", json={}, timeout=30)
    assert r.status_code == 404 and "no_such_trainer" in r.json()["detail"]


# ----------------------------------------------------------------------------------------------------------------
# (3) load: 8 concurrent identical requests, identical results, memory back near idle
# ----------------------------------------------------------------------------------------------------------------
def test_concurrent_drr_requests_identical_and_memory_returns(server, tmp_path):
    params = {"view": "pa", "size": [384, 384], "seed": 11, "dose": 20000}  # noise on: same seed, same pixels

    def one(_):
        r = _infer_http(server, "drr", "phantom", params, timeout=240)
        return r.status_code, r

    proc = psutil.Process(server.server_pid())
    one(0)  # warm-up: imports, caches
    time.sleep(0.5)
    idle = proc.memory_info().rss
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(code == 200 for code, _ in results), [r.text[:200] for c, r in results if c != 200]
    arrays = [sitk.GetArrayFromImage(_read_nrrd_bytes(_split_multipart(r)[1], tmp_path)) for _, r in results]
    for a in arrays[1:]:
        np.testing.assert_array_equal(a, arrays[0])
    assert arrays[0].std() > 0
    peak_after = proc.memory_info().rss
    time.sleep(1.0)
    after = proc.memory_info().rss
    mb = 1024 * 1024
    print(f"server RSS: idle {idle / mb:.0f} MB, right after 8 requests {peak_after / mb:.0f} MB, "
          f"1 s later {after / mb:.0f} MB")
    assert after <= idle + max(64 * mb, 0.15 * idle), (
        f"server RSS idle {idle / mb:.0f} MB, after load {after / mb:.0f} MB (right after {peak_after / mb:.0f} MB)")
    assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200


# ----------------------------------------------------------------------------------------------------------------
# --conf: a given model path, default sampler/steps, and start-up refusal of bad values
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_with_model(studies, tiny_ddpm_hq_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("server_model")
    srv = MonaiLabelServer(studies, work, conf={"model_path": str(tiny_ddpm_hq_model), "sampler": "ddim", "steps": "3",
                                                "device": "cpu", "model_dir": str(work / "model")})
    srv.start()
    yield srv
    srv.stop()


def test_conf_model_path_enhances_ct_and_upload(server_with_model, tiny_ddpm_hq_model, tmp_path):
    srv = server_with_model
    info = requests.get(f"{srv.url}/info/", timeout=10).json()
    cfg = info["models"]["drr_enhance"]["config"]
    assert cfg["sampler"] == "ddim" and cfg["steps"] == 3
    assert info["dxr"]["enhancer"]["model"] == "conf"  # an id: /info shows no server path
    assert str(tiny_ddpm_hq_model.parent) not in json.dumps(info)

    client = MONAILabelClient(srv.url, tmpdir=str(tmp_path))
    image_out, result = client.infer("drr_enhance", "phantom", dict(DRR_PARAMS, nodules=1, nodule_size=[20, 24]))
    img = sitk.ReadImage(image_out)
    assert img.GetSize() == (128, 96)  # 2x of (rows 48, cols 64)
    (lab,) = result["nodules"]  # labels follow the enhanced grid
    assert lab["segmentation"]["size"] == [96, 128] and lab["area"] > 0
    _, lq_result = client.infer("drr", "phantom", dict(DRR_PARAMS, nodules=1, nodule_size=[20, 24]))
    (lq_lab,) = lq_result["nodules"]
    assert lab["bbox"] == [2 * v for v in lq_lab["bbox"]] and lab["area"] == 4 * lq_lab["area"]
    np.testing.assert_allclose(lab["centre_px"], 2 * np.asarray(lq_lab["centre_px"]) + 0.5, atol=1e-9)
    lq = result["lq"]["pixel_spacing_mm"]
    np.testing.assert_allclose(img.GetSpacing(), (lq[1] / 2, lq[0] / 2), rtol=1e-9)
    assert result["enhance"]["sampler"] == "ddim" and result["enhance"]["steps"] == 3
    # the projection matrix follows the finer grid: the LQ pixel centre (c, r) lands on (2c + 0.5, 2r + 0.5)
    p_lq, p_hq = np.asarray(result["lq"]["projection_matrix"]), np.asarray(result["projection_matrix"])
    pt = np.array([10.0, -20.0, 30.0, 1.0])
    a, b = p_lq @ pt, p_hq @ pt
    np.testing.assert_allclose(b[:2] / b[2], 2 * a[:2] / a[2] + 0.5, atol=1e-6)
    arr = sitk.GetArrayFromImage(img)
    assert np.isfinite(arr).all() and 0 <= arr.min() and arr.max() <= 1

    # same request, same seed: same pixels; an uploaded radiograph: 2x, spacing halved
    again, _ = client.infer("drr_enhance", "phantom", dict(DRR_PARAMS, nodules=1, nodule_size=[20, 24]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(again)), arr)
    r = _infer_http(srv, "drr_enhance", params={"scale": 2, "steps": 2},
                    files={"file": ("xray.png", _png_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    res, data = _split_multipart(r)
    up = _read_nrrd_bytes(data, tmp_path)
    assert up.GetSize() == (96, 80) and res["image"]["size"] == [80, 96]
    np.testing.assert_allclose(up.GetSpacing(), (0.25, 0.25), rtol=1e-3)
    # bad sampler / steps on a server that has a model: 422 with the reason
    for params, word in (({"sampler": "euler"}, "sampler"), ({"steps": 5000}, "steps"), ({"scale": 9}, "scale")):
        r = _infer_http(srv, "drr_enhance", "chest_xray", params)
        assert r.status_code == 422 and word in r.json()["detail"], r.text


def test_bad_conf_value_stops_startup_with_message(studies, tmp_path):
    srv = MonaiLabelServer(studies, tmp_path, conf={"steps": "many"})
    with pytest.raises(RuntimeError) as err:
        srv.start(timeout=90)
    assert "--conf steps must be a whole number" in str(err.value)


def _train(srv, params: dict, timeout: float = 240) -> dict:
    r = requests.post(f"{srv.url}/train/ddpm_hq_finetune", json=params, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.time() + timeout
    status: dict = {}
    while time.time() < deadline:
        status = requests.get(f"{srv.url}/train/", timeout=10).json()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(1.0)
    assert status.get("status") == "DONE", json.dumps(status, default=str)[-3000:]
    return requests.get(f"{srv.url}/info/", timeout=10).json()["train_stats"]["ddpm_hq_finetune"]


def test_train_task_through_rest(server_with_model, tiny_ddpm_hq_model, tmp_path):
    """POST /train/ddpm_hq_finetune: checked before it starts, a fresh run each time, published only when better."""
    srv = server_with_model
    model = srv.work / "model" / "ddpm_hq_finetuned.pt"
    # bad parameters: 422 naming the key, and no job starts
    for params, word in (({"steps": "abc"}, "steps"), ({"init": str(tiny_ddpm_hq_model)}, "init"),
                         ({"lr": -1}, "lr"), ({"stepz": 3}, "stepz"), ({"resume": True}, "resume")):
        r = requests.post(f"{srv.url}/train/ddpm_hq_finetune", json=params, timeout=30)
        assert r.status_code == 422 and word in r.json()["detail"], r.text
    for body in (b"not json", b"[1, 2]"):
        r = requests.post(f"{srv.url}/train/ddpm_hq_finetune", data=body, timeout=30,
                          headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
    assert requests.get(f"{srv.url}/train/", timeout=10).status_code == 404  # "no training task found": none ran

    # a run that wrecks the model (lr 1.0): validation says it is worse, the served model stays
    bad = _train(srv, {"steps": 3, "batch_size": 2, "crop": 16, "lr": 1.0})
    print("bad run:", json.dumps({k: bad[k] for k in ("psnr_served", "psnr_trained", "published", "reason")}))
    assert bad["published"] is False and "served model stays" in bad["reason"]
    assert bad["psnr_trained"] < bad["psnr_served"]
    assert not model.exists()
    info = requests.get(f"{srv.url}/info/", timeout=10).json()
    assert info["dxr"]["enhancer"]["model"] == "conf"
    for key in ("epoch", "total_epochs", "best_metric", "total_time"):  # what MONAI Label's Slicer plugin reads
        assert key in bad
    assert bad["epoch"] == bad["total_epochs"] == 3 and bad["resumed"] is False
    assert str(srv.work) not in json.dumps(info)  # no server paths in the stats

    # a second run: its own folder and pairs, not a continuation of the first; it learns and is published
    good = _train(srv, {"steps": 40, "batch_size": 2, "crop": 16, "lr": 2e-3})
    print("good run:", json.dumps({k: good[k] for k in ("psnr_served", "psnr_trained", "published", "reason")}))
    assert good["run"] != bad["run"] and good["resumed"] is False and good["epoch"] == 40
    runs = sorted(p.name for p in (srv.work / "model" / "runs").iterdir())
    assert runs == sorted([bad["run"], good["run"]])
    assert good["published"] is True and good["psnr_trained"] > good["psnr_served"]
    assert model.is_file()
    from dxr_core.diffusion.enhancer import load_enhancer

    enh = load_enhancer(model)
    assert enh.model_config.channels == (32, 64)  # the served (tiny) architecture, fine-tuned
    # the server kept serving during training
    assert requests.get(f"{srv.url}/info/", timeout=10).status_code == 200
