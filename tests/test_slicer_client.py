"""The Slicer module's REST client (slicer_extension/DiffusionXRayLib) against a real
`monailabel start_server --app monailabel_app` process on 127.0.0.1 (started by tests/monailabel_server.py).

Covers: DRR and enhanced DRR for a server study and for an uploaded CT file (the module's path: the CT volume node is
saved to a temporary NRRD and uploaded), image size / pixel spacing / placement, nodule labels -> markup positions,
and 4xx answers surfacing as one clear exception.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monailabel")
sitk = pytest.importorskip("SimpleITK")

from monailabel_server import ROOT, MonaiLabelServer, free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

sys.path.insert(0, str(ROOT / "slicer_extension"))
from DiffusionXRayLib import (  # noqa: E402
    DXRClient,
    DXRClientError,
    ServerError,
    ServerUnreachable,
    nodule_markups,
    project_lps,
    ras_to_lps,
    result_ijk_to_ras,
)

SIZE = [24, 32]  # rows, cols: small and not square, so a swapped axis shows


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    from dxr_core.phantom import make_chest_phantom

    root = tmp_path_factory.mktemp("slicer_studies")
    ct = make_chest_phantom(seed=0, spacing_mm=5.0)  # ~64 x 50 x 71 voxels: fast DRRs
    sitk.WriteImage(ct.to_sitk(), str(root / "phantom.nrrd"), True)
    return root


@pytest.fixture(scope="module")
def uploaded_ct(studies, tmp_path_factory) -> Path:
    """The CT as the Slicer module uploads it: a NRRD saved from the volume node under another name."""
    path = tmp_path_factory.mktemp("slicer_upload") / "CT volume 1.2.nrrd"  # dots in the name on purpose
    path.write_bytes((studies / "phantom.nrrd").read_bytes())
    return path


@pytest.fixture(scope="module")
def server(studies, tiny_ddpm_hq_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("slicer_server")
    conf = {"device": "cpu", "model_dir": str(work / "model"), "max_size": "512", "model_path": str(tiny_ddpm_hq_model)}
    srv = MonaiLabelServer(studies, work, conf=conf)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> DXRClient:
    return DXRClient(server.url, timeout=240, tmpdir=str(tmp_path_factory.mktemp("slicer_results")))


def _read(path: str):
    img = sitk.ReadImage(path)
    return img, sitk.GetArrayFromImage(img)


# ----------------------------------------------------------------------------------------------------------------
def test_info_and_studies(client, tiny_ddpm_hq_model):
    info = client.info()
    assert {"drr", "drr_enhance"} <= set(info["models"])
    assert info["dxr"]["enhancer"]["installed"] is True
    assert "phantom" in client.studies()


def test_drr_study_and_uploaded_file_agree(client, uploaded_ct):
    params = {"view": "pa", "size": SIZE, "kvp": 100, "seed": 3}
    a = client.drr(image="phantom", **params)
    b = client.drr(file=str(uploaded_ct), **params)
    try:
        for res in (a, b):
            img, arr = _read(res.image_path)
            assert img.GetSize() == (SIZE[1], SIZE[0])  # ITK (x = cols, y = rows)
            assert res.size == tuple(SIZE)
            sr, sc = res.pixel_spacing_mm
            np.testing.assert_allclose(img.GetSpacing(), (sc, sr), rtol=1e-6)
            assert arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1 and arr.std() > 0.01
            assert np.asarray(res.result["projection_matrix"]).shape == (3, 4)
        np.testing.assert_allclose(_read(a.image_path)[1], _read(b.image_path)[1], atol=1e-6)
        assert a.result["geometry"] == b.result["geometry"]
    finally:
        a.cleanup()
        b.cleanup()
    assert a.image_path is None


def test_drr_placement_and_nodule_markups(client):
    size = [64, 80]  # fine enough for the nodules to cover pixels (a 0-area label has an empty box and no ROI)
    res = client.drr(image="phantom", view="pa", size=size, nodules=2, nodule_size=[12, 16], nodule_seed=5, seed=1)
    try:
        g = res.geometry
        m = result_ijk_to_ras(res.result)
        # pixel (row r, col c) sits on the detector: IJK (c, r, 0) -> RAS -> LPS reprojects onto (c, r)
        cr = np.array([[0, 0], [size[1] - 1, 0], [5, 7], [size[1] - 1, size[0] - 1]], dtype=float)
        ras = (m @ np.c_[cr, np.zeros(len(cr)), np.ones(len(cr))].T).T[:, :3]
        np.testing.assert_allclose(project_lps(res.result["projection_matrix"], ras_to_lps(ras)), cr, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(m[:3, :2], axis=0), g["pixel_spacing_mm"][::-1], rtol=1e-9)
        # PA film read as usual: columns run to the patient's left (RAS -x), rows to the feet (RAS -z)
        assert m[0, 0] < 0 and m[2, 1] < 0

        items = nodule_markups(res.result)
        assert len(items) == 2 and len(res.nodules) == 2
        src = np.asarray(g["source_lps"])
        for item, lab in zip(items, res.nodules):
            centre = ras_to_lps(item["centre_ras"])
            np.testing.assert_allclose(centre, lab["centre_lps"], atol=1e-9)
            on_image = ras_to_lps(item["image_ras"])
            # source, nodule centre and its image point are on one ray
            ray, to_centre = on_image - src, centre - src
            assert np.linalg.norm(np.cross(ray, to_centre)) / (np.linalg.norm(ray) * np.linalg.norm(to_centre)) < 1e-9
            np.testing.assert_allclose(project_lps(res.result["projection_matrix"], centre)[0], lab["centre_px"],
                                       atol=1e-6)
            x, y, w, h = lab["bbox"]
            assert w > 0 and h > 0, lab
            sr, sc = g["pixel_spacing_mm"]
            np.testing.assert_allclose(item["roi_size_mm"], [w * sc, h * sr, 1.0])
            # the label's centre pixel lies inside its box
            assert x - 0.5 <= lab["centre_px"][0] <= x + w - 0.5 and y - 0.5 <= lab["centre_px"][1] <= y + h - 0.5
    finally:
        res.cleanup()


def test_enhanced_drr_study_and_upload(client, uploaded_ct, tiny_ddpm_hq_model):
    params = {"view": "pa", "size": SIZE, "seed": 2, "sampler": "ddim", "steps": 2, "scale": 2, "nodules": 1}
    for kwargs in ({"image": "phantom"}, {"file": str(uploaded_ct)}):
        res = client.drr_enhance(**kwargs, **params)
        try:
            img, arr = _read(res.image_path)
            assert img.GetSize() == (2 * SIZE[1], 2 * SIZE[0])
            lq = res.result["lq"]["pixel_spacing_mm"]
            np.testing.assert_allclose(img.GetSpacing(), (lq[1] / 2, lq[0] / 2), rtol=1e-6)
            np.testing.assert_allclose(res.pixel_spacing_mm, (lq[0] / 2, lq[1] / 2), rtol=1e-6)
            assert np.isfinite(arr).all() and 0 <= arr.min() and arr.max() <= 1
            assert res.result["enhance"]["sampler"] == "ddim" and res.result["enhance"]["steps"] == 2
            # the enhanced image covers the same detector: its placement uses the finer grid of the answer
            m = result_ijk_to_ras(res.result)
            np.testing.assert_allclose(np.linalg.norm(m[:3, :2], axis=0), img.GetSpacing(), rtol=1e-6)
            (item,) = nodule_markups(res.result)
            (lab,) = res.nodules
            assert item["image_ras"] is not None
            assert (item["roi_center_ras"] is not None) == (lab["bbox"][2] > 0 and lab["bbox"][3] > 0)
        finally:
            res.cleanup()


# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,status,words", [
    ({"image": "no_such_study"}, 404, "Unknown study"),
    ({"image": "phantom", "kvp": 500}, 422, "kvp"),
    ({"image": "phantom", "view": "oblique"}, 422, "view"),
    ({"image": "phantom", "size": 100000}, 422, "size"),
])
def test_refused_request_is_one_clear_exception(client, kwargs, status, words):
    with pytest.raises(ServerError) as err:
        client.drr(**kwargs)
    e = err.value
    assert e.status == status and words.lower() in e.detail.lower()
    msg = str(e)
    assert msg.startswith(f"The DiffusionXRay server refused the 'drr' request ({status}): ")
    assert e.detail in msg and "Traceback" not in msg


def test_refused_enhancement_and_upload_of_a_non_ct(client, tmp_path, tiny_ddpm_hq_model):
    with pytest.raises(ServerError) as err:
        client.drr_enhance(image="phantom", sampler="euler")
    assert err.value.status == 422 and "sampler" in str(err.value)
    bad = tmp_path / "not_a_ct.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a NIfTI volume" * 4)
    with pytest.raises(ServerError) as err:
        client.drr(file=str(bad))
    assert err.value.status == 400 and "corrupt" in err.value.detail


def test_client_side_errors_need_no_server(tmp_path):
    with pytest.raises(ServerUnreachable) as err:
        DXRClient(f"127.0.0.1:{free_port()}", timeout=5).info()
    assert "Cannot reach the DiffusionXRay server" in str(err.value) and "monailabel start_server" in str(err.value)
    c = DXRClient("http://127.0.0.1:9/")
    assert c.server_url == "http://127.0.0.1:9"
    with pytest.raises(DXRClientError, match="exactly one input"):
        c.drr()
    with pytest.raises(DXRClientError, match="exactly one input"):
        c.drr(image="x", file="y")
    with pytest.raises(DXRClientError, match="does not exist"):
        c.drr(file=str(tmp_path / "missing.nrrd"))
    for url in ("", "ftp://host/x"):
        with pytest.raises(DXRClientError):
            DXRClient(url)


def test_abort_cuts_a_hanging_request_at_once():
    """Cancel: a server that accepts and never answers; abort() from another thread ends the call in well under a
    second with Cancelled (not a timeout, not ServerUnreachable)."""
    import socket
    import threading
    import time

    from DiffusionXRayLib import Cancelled

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        c = DXRClient(f"http://127.0.0.1:{port}", timeout=60)
        errors = []

        def call():
            try:
                c.drr(image="phantom")
            except Exception as err:  # noqa: BLE001
                errors.append(err)

        t = threading.Thread(target=call)
        t.start()
        conn, _ = srv.accept()  # the request is in flight
        time.sleep(0.2)
        c.abort()
        t.join(30)  # the server never answers and the client would wait 60 s: only the abort ends the call
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
        conn.close()
    finally:
        srv.close()


# ----------------------------------------------------------------------------------------------------------------
# the module's self-test (DiffusionXRayTest) and logic, with the Qt-free parts (tests/fake_slicer.py)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture()
def fake(monkeypatch):
    try:
        import slicer
    except ImportError:
        slicer = None
    if slicer is None or not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("PyPI slicer-core (Qt-free MRML) is not installed; the self-test needs its MRML layer")
    from fake_slicer import FakeSlicer

    f = FakeSlicer(monkeypatch, slicer)
    yield f
    f.close()


def test_module_self_test_against_the_server(server, fake, monkeypatch):
    monkeypatch.setenv("DIFFUSIONXRAY_SERVER_URL", server.url)
    test = fake.module.DiffusionXRayTest()
    test.runTest()
    if test.skipped:
        pytest.skip(f"DiffusionXRayTest skipped its server round trip: {test.skipped[0]}")
    assert "Server round trip passed" in fake.displays and "Geometry glue passed" in fake.displays
    assert fake.processEvents > 0  # the blocking helper kept the (fake) application's events flowing


def test_module_self_test_skips_with_its_reason_without_a_server(fake, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DIFFUSIONXRAY_SERVER_URL", url)
    test = fake.module.DiffusionXRayTest()
    test.runTest()  # does not raise
    assert len(test.skipped) == 1 and f"no DiffusionXRay server reachable at {url}" in test.skipped[0]
    assert any(d.startswith("Skipped the server round trip: ") for d in fake.displays)
    assert "Geometry glue passed" in fake.displays
    monkeypatch.delenv("DIFFUSIONXRAY_SERVER_URL")
    test = fake.module.DiffusionXRayTest()
    test.runTest()
    assert "set DIFFUSIONXRAY_SERVER_URL" in test.skipped[0]


def test_ct_is_uploaded_once_to_a_writable_datastore(studies, tmp_path_factory, fake, monkeypatch):
    """With `--conf datastore_writes true` the CT becomes a study (named by its content) on the first request and is
    only named by id afterwards; the result is kept as a label of that study."""
    import numpy as np

    work = tmp_path_factory.mktemp("slicer_server_rw")
    srv = MonaiLabelServer(studies, work, conf={"device": "cpu", "model_dir": str(work / "model"),
                                                "max_size": "256", "datastore_writes": "true"})
    srv.start()
    try:
        mod = fake.module
        uploads = []
        real_upload = DXRClient.upload_study

        def counting(self, study_id, file, progress=None):
            uploads.append(study_id)
            return real_upload(self, study_id, file, progress)

        monkeypatch.setattr(DXRClient, "upload_study", counting)
        img = sitk.ReadImage(str(studies / "phantom.nrrd"))
        arr = sitk.GetArrayFromImage(img)  # the voxels exactly as the study holds them
        m = np.eye(4)
        m[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())[None, :]
        m[:3, 3] = img.GetOrigin()
        ct = fake.slicer.util.addVolumeFromArray(arr, ijkToRAS=np.diag([-1.0, -1.0, 1.0, 1.0]) @ m, name="CT")
        logic = mod.DiffusionXRayLogic(srv.url)
        outs = [logic.generate("drr", ctNode=ct, params=logic.parameters("drr", size=[24, 32]), timeout=120)
                for _ in range(2)]
        assert [o["sent"] for o in outs] == ["datastore", "datastore"]
        assert len(uploads) == 1 and uploads[0].startswith("slicer_ct_") and logic.ctCache.writes == 1
        assert uploads[0] in DXRClient(srv.url).studies()
        assert outs[0]["result"].get("saved_as", {}).get("label") == uploads[0]
        # the same pixels as the study the CT came from
        ref = DXRClient(srv.url).drr(image="phantom", size=[24, 32])
        try:
            np.testing.assert_allclose(fake.slicer.util.arrayFromVolume(outs[1]["volume"])[0],
                                       sitk.GetArrayFromImage(sitk.ReadImage(ref.image_path)), atol=1e-5)
        finally:
            ref.cleanup()
    finally:
        srv.stop()


def test_enhance_a_radiograph_from_the_scene(server, fake, tiny_ddpm_hq_model):
    """'Enhance this radiograph': a 2-D volume node (a CR as loaded from DICOM: uint16 pixels) is sent as a 2-D
    image and the enhanced film comes back placed on the input's plane (same corners, half the pixel spacing)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pixels = (rng.random((1, 24, 32)) * 4000).astype(np.uint16)
    ijk = np.array([[-0.7, 0, 0, 120.0], [0, 0, -0.7, 40.0], [0, -1.0, 0, -200.0], [0, 0, 0, 1]])  # a coronal film
    cr = fake.slicer.util.addVolumeFromArray(pixels, ijkToRAS=ijk, name="CR")
    logic = fake.module.DiffusionXRayLogic(server.url)
    out = logic.enhanceRadiograph(cr, logic.parameters("radiograph", steps=2, scale=2, seed=1), timeout=120)
    film = out["volume"]
    assert film.GetName() == "Enhanced CR" and film.GetImageData().GetDimensions() == (64, 48, 1)
    assert out["sent"] == "upload" and out["result"]["image"]["size"] == [48, 64]
    m = np.eye(4)
    d = [[0.0] * 3 for _ in range(3)]
    film.GetIJKToRASDirections(d)
    m[:3, :3] = np.asarray(d) * np.asarray(film.GetSpacing())[None, :]
    m[:3, 3] = film.GetOrigin()
    np.testing.assert_allclose(m[:3, :2], ijk[:3, :2] / 2, atol=1e-9)
    np.testing.assert_allclose(m @ [-0.5, -0.5, 0, 1], ijk @ [-0.5, -0.5, 0, 1], atol=1e-9)  # same corner
    arr = fake.slicer.util.arrayFromVolume(film)
    assert np.isfinite(arr).all() and arr.std() > 0
