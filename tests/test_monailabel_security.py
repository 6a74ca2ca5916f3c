"""The MONAI Label app on a hospital network: the attacks of issue 8, each against a real server on 127.0.0.1.

- no code execution: a pickle never runs (uploaded or named as a training start), checkpoints load weights-only;
- no reads outside the studies folder: every outside path, '/', '/tmp', '..' and a symlink out answer the same 404;
- no writes outside it: the datastore is read-only unless asked, and traversal ids/tags are refused when writable;
- no temporary files left: refused uploads leave the server's temp folders as they were;
- never frozen: /info answers in well under a second while an enhancement runs; over-long requests are stopped
  (504) and a full queue answers 503;
- a request fuzz gets no 500 and leaves the server serving.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("monailabel")
pytest.importorskip("pebble")
sitk = pytest.importorskip("SimpleITK")

from monailabel_server import MonaiLabelServer  # noqa: E402

UNKNOWN = "Unknown study"


class Evil:
    """Unpickling this creates the marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"format": "dxr-ddpm-hq/1", "payload": Evil(str(marker))}, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """studies/ (a CT, a radiograph, a symlink pointing outside) and outside/ (a CT the server must never read)."""
    from dxr_core.io.radiograph import write_radiograph
    from dxr_core.phantom import make_chest_phantom

    root = tmp_path_factory.mktemp("sec")
    studies, outside = root / "studies", root / "outside"
    studies.mkdir()
    outside.mkdir()
    ct = make_chest_phantom(seed=0, spacing_mm=5.0)
    sitk.WriteImage(ct.to_sitk(), str(studies / "phantom.nrrd"), True)
    sitk.WriteImage(ct.to_sitk(), str(outside / "secret_ct.nrrd"), True)
    (studies / "link.nrrd").symlink_to(outside / "secret_ct.nrrd")
    yy, xx = np.mgrid[0:64, 0:64]
    write_radiograph((0.3 + 0.4 * np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 300.0)).astype(np.float32),
                     (0.5, 0.5), studies / "chest_xray.png")
    return root


@pytest.fixture(scope="module")
def server(world):
    """Writes on (to attack them), 2 MiB uploads, the shipped model; its temp folder is watched."""
    work = world / "server"
    work.mkdir()
    (work / "systmp").mkdir()
    srv = MonaiLabelServer(world / "studies", work,
                           conf={"datastore_writes": "true", "max_upload_mb": "2", "model_dir": str(work / "model"),
                                 "work_dir": str(work / "appwork"), "max_seconds": "900"},
                           env={"TMPDIR": str(work / "systmp")})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict_server(world):
    """Read-only datastore (the default), 4 s per request, no waiting line."""
    work = world / "strict"
    work.mkdir()
    srv = MonaiLabelServer(world / "studies", work,
                           conf={"max_seconds": "4", "max_queue": "0", "workers": "1",
                                 "model_dir": str(work / "model"), "work_dir": str(work / "appwork")})
    srv.start()
    yield srv
    srv.stop()


def _infer(srv, model, image="", params=None, files=None, timeout=120, raw_params=None):
    data = {"params": raw_params if raw_params is not None else json.dumps(params or {})}
    return requests.post(f"{srv.url}/infer/{model}", params={"image": image} if image else {}, data=data,
                         files=files, timeout=timeout)


def _tree(path: Path) -> set:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# ----------------------------------------------------------------------------------------------------------------
# 1. code execution
# ----------------------------------------------------------------------------------------------------------------
def test_pickle_checkpoint_never_runs(server, world, tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    # the library refuses it (weights-only loading), with a sentence
    from dxr_core.diffusion.enhancer import load_enhancer
    from dxr_core.errors import ModelError

    with pytest.raises(ModelError):
        load_enhancer(evil)
    assert not marker.exists()
    # through the server: uploaded into the (writable) datastore, then named as the training start
    r = requests.put(f"{server.url}/datastore/image", params={"image": "evil"},
                     files={"file": ("evil.pt", evil.read_bytes())}, timeout=30)
    assert r.status_code == 422 and "image types" in r.json()["detail"], r.text  # not a study type
    stored = list((world / "studies").glob("evil*"))
    for init in (str(evil), "evil", str(stored[0]) if stored else "evil.pt", "../evil.pt"):
        r = requests.post(f"{server.url}/train/ddpm_hq_finetune", json={"init": init, "steps": 1}, timeout=30)
        assert r.status_code == 422 and "init" in r.json()["detail"], r.text
    # nor as an inference input
    r = _infer(server, "drr_enhance", "evil", {"steps": 2})
    assert r.status_code in (400, 404, 422), r.text
    time.sleep(1.0)
    assert not marker.exists()
    for p in stored:
        p.unlink()


# ----------------------------------------------------------------------------------------------------------------
# 2. reads outside the studies folder
# ----------------------------------------------------------------------------------------------------------------
def test_outside_paths_are_one_404(server, world):
    secret = world / "outside" / "secret_ct.nrrd"
    names = [str(secret), "/etc/passwd", "/etc/nonexistent", "/", "/tmp", str(world / "outside"),
             "../outside/secret_ct", "..", "./phantom", "phantom/../phantom", "link", "%2e%2e%2fphantom",
             "no_such_study"]
    details = set()
    for name in names:
        for task in ("drr", "drr_enhance"):
            r = _infer(server, task, name, {"size": 32, "steps": 2} if task == "drr_enhance" else {"size": 32})
            assert r.status_code == 404, (name, r.status_code, r.text)
            details.add(r.json()["detail"])
    assert len(details) == 1 and UNKNOWN in details.pop()  # the same words whether the path exists or not
    # downloads: the same rules
    for name in ("link", "../outside/secret_ct", str(secret)):
        assert requests.get(f"{server.url}/datastore/image", params={"image": name}, timeout=10).status_code == 404
    # the study itself works
    r = _infer(server, "drr", "phantom", {"size": 32})
    assert r.status_code == 200, r.text


def test_no_server_paths_in_answers(server, world):
    texts = [requests.get(f"{server.url}/info/", timeout=10).text]
    for output in ("all", "train", "stats", "bogus"):
        r = requests.get(f"{server.url}/datastore/", params={"output": output}, timeout=10)
        assert r.status_code == (422 if output == "bogus" else 200), r.text
        texts.append(r.text)
    assert "phantom" in texts[1]  # the listing names the studies
    texts.append(_infer(server, "drr", "phantom", {"size": 32}, raw_params=None).text[:4000])
    texts.append(_infer(server, "drr", "chest_xray", {}).text)
    texts.append(_infer(server, "drr", "", {}, files={"file": ("x.nii.gz", b"garbage" * 10)}).text)
    for t in texts:
        assert str(world) not in t and os.path.expanduser("~") + "/" not in t, t[:500]


# ----------------------------------------------------------------------------------------------------------------
# 3. writes outside the studies folder, and temporary files
# ----------------------------------------------------------------------------------------------------------------
def test_datastore_writes_stay_inside(server, strict_server, world):
    before = _tree(world)
    png = (world / "studies" / "chest_xray.png").read_bytes()
    # read-only server (the default): every write is 403 and nothing changes
    for method, path, kw in (("put", "/datastore/image", {"params": {"image": "x"}, "files": {"file": ("x.png", png)}}),
                             ("put", "/datastore/label", {"params": {"image": "phantom", "tag": "t"},
                                                          "files": {"label": ("l.nrrd", b"x")}}),
                             ("delete", "/datastore/image", {"params": {"id": "phantom"}}),
                             ("delete", "/datastore/label", {"params": {"id": "phantom", "tag": "final"}})):
        r = getattr(requests, method)(f"{strict_server.url}{path}", timeout=30, **kw)
        assert r.status_code == 403 and "datastore_writes" in r.json()["detail"], r.text
    # writable server: traversal ids and tags are refused
    attacks = [("/datastore/image", {"image": "../escape"}, "file"),
               ("/datastore/image", {"image": "/tmp/escape"}, "file"),
               ("/datastore/image", {"image": ".hidden"}, "file"),
               ("/datastore/label", {"image": "phantom", "tag": "../../escape"}, "label"),
               ("/datastore/label", {"image": "phantom", "tag": "a/b"}, "label"),
               ("/datastore/label", {"image": "../phantom", "tag": "final"}, "label")]
    for path, query, field in attacks:
        r = requests.put(f"{server.url}{path}", params=query, files={field: ("escape.png", png)}, timeout=30)
        assert r.status_code in (404, 422), (query, r.status_code, r.text)
    after = _tree(world)
    new = {p for p in after - before if not p.startswith(("server/", "strict/", "studies/labels", "studies/.lock",
                                                            "studies/datastore"))}
    assert not new, new
    assert not (world / "escape.png").exists() and not (world.parent / "escape.png").exists()
    # info updates: a known study works, a traversal id is refused
    r = requests.put(f"{server.url}/datastore/image/info", params={"image": "phantom"},
                     data={"info": json.dumps({"note": "checked"})}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.put(f"{server.url}/datastore/image/info", params={"image": "../phantom"},
                     data={"info": "{}"}, timeout=30)
    assert r.status_code in (404, 422), r.text
    r = requests.put(f"{server.url}/datastore/image/info", params={"image": "phantom"}, data={"info": "[1]"},
                     timeout=30)
    assert r.status_code == 422, r.text
    # a plain upload works and lands in the studies folder
    r = requests.put(f"{server.url}/datastore/image", params={"image": "uploaded"}, files={"file": ("u.png", png)},
                     timeout=30)
    assert r.status_code == 200, r.text
    assert (world / "studies" / "uploaded.png").is_file()
    (world / "studies" / "uploaded.png").unlink()


def test_refused_uploads_leave_no_temp_files(server):
    tmp_dirs = [server.work / "systmp", server.work / "appwork" / "tmp"]
    before = [_tree(d) for d in tmp_dirs]
    big = b"\0" * (3 * 1024 * 1024)  # over the 2 MiB limit
    r = _infer(server, "drr", "", {}, files={"file": ("big.nii.gz", big)})
    assert r.status_code == 413 and "max_upload_mb" in r.json()["detail"], r.text
    r = _infer(server, "drr", "", {}, files={"file": ("bad.nii.gz", b"\x1f\x8b not a volume" * 50)})
    assert r.status_code == 400, r.text
    r = _infer(server, "drr", "", {"nope": 1}, files={"file": ("ct.nrrd", b"x" * 1000)})
    assert r.status_code == 422, r.text
    r = requests.put(f"{server.url}/datastore/image", params={"image": "big"}, files={"file": ("big.png", big)},
                     timeout=30)
    assert r.status_code == 413, r.text
    time.sleep(0.5)
    assert [_tree(d) for d in tmp_dirs] == before


# ----------------------------------------------------------------------------------------------------------------
# 4. never frozen
# ----------------------------------------------------------------------------------------------------------------
def test_info_answers_while_enhancing(server):
    from dxr_core.diffusion.enhancer import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped DDPM-HQ weights")
    box = {}

    def enhance():
        box["r"] = _infer(server, "drr_enhance", "phantom", {"size": 320, "steps": 40}, timeout=900)

    t = threading.Thread(target=enhance)
    t.start()
    time.sleep(2.0)  # the job is in the worker
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
        times.append(time.perf_counter() - t0)
        time.sleep(0.2)
    running = t.is_alive()
    t.join()
    med = statistics.median(times)
    print(f"GET /info/ while an enhancement runs: median {med * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"(enhancement still running after the 10 calls: {running})")
    assert box["r"].status_code == 200, box["r"].text
    assert running, "the enhancement finished before the measurement ended; make it longer"
    assert med <= 1.0


def test_overlong_request_504_full_queue_503(strict_server):
    srv = strict_server
    box = {}

    def slow():  # ~20 s of work at 20 evaluations on 640^2: stopped after 4 s
        box["r"] = _infer(srv, "drr_enhance", "phantom", {"size": 320, "steps": 20}, timeout=120)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.0)
    r = _infer(srv, "drr", "phantom", {"size": 32})  # the only worker is busy and there is no waiting line
    assert r.status_code == 503 and "busy" in r.json()["detail"], r.text
    t.join()
    assert box["r"].status_code == 504 and "max_seconds" not in box["r"].text, box["r"].text
    assert "stopped" in box["r"].json()["detail"]
    # the worker was replaced: the next request is served
    r = _infer(srv, "drr", "phantom", {"size": 32}, timeout=120)
    assert r.status_code == 200, r.text
    # limits refused before any work: evaluations and work budget
    for params, word in (({"steps": 500}, "steps"), ({"sampler": "ddpm"}, "evaluations"),
                         ({"size": 2048, "scale": 4, "steps": 50}, "max_work")):
        r = _infer(srv, "drr_enhance", "phantom", params)
        assert r.status_code == 422 and word in r.json()["detail"], r.text


# ----------------------------------------------------------------------------------------------------------------
# 5. the request contract and a fuzz
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,word", [("not json", "JSON"), ("[1, 2]", "object"), ("3", "object"),
                                      ('"size"', "object"), ('{"size": 64, "foo": 1}', "foo"),
                                      ('{"size": "big"}', "size"), ('{"kvp": 9999}', "kvp"),
                                      ('{"nodules": true}', "nodules")])
def test_malformed_params_are_422_naming_the_problem(server, raw, word):
    r = _infer(server, "drr", "phantom", raw_params=raw)
    assert r.status_code == 422 and word in r.json()["detail"], r.text


def test_results_are_kept_beside_the_study(server):
    r = _infer(server, "drr", "phantom", {"size": 40, "nodules": 1, "nodule_size": [10, 12]})
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.url}/datastore/label", params={"label": "phantom", "tag": "drr"}, timeout=30)
    assert r.status_code == 200 and len(r.content) > 100
    info = requests.get(f"{server.url}/datastore/label/info", params={"label": "phantom", "tag": "drr"},
                        timeout=30).json()
    assert np.asarray(info["projection_matrix"]).shape == (3, 4) and len(info["nodules"]) == 1


def _fuzz_request(rng: random.Random):
    ids = ["phantom", "chest_xray", "", "..", "../x", "/etc/passwd", "/", "/tmp", "link", "\x00", "a" * 300,
           "phantom.nrrd", "%00", "ph antom", "__init__"]
    keys = ["size", "view", "kvp", "steps", "sampler", "scale", "seed", "nodules", "nodule_points", "dose", "foo",
            "", "__class__", "tile", "output_dtype", "sid", "sad", "mode", "energy_kev", "nodule_size"]
    values = [None, True, -1, 0, 1, 3.5, 1e308, float("nan"), "x", "", [], [1], [[1, 2, 3]], {}, {"a": 1}, "64",
              "pa", "ddim", 10**12, -10**12, "uint16", [64, 48]]
    kind = rng.random()
    task = rng.choice(["drr", "drr_enhance", "drr", "nope", "../drr"])
    if kind < 0.65:
        params = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 4))}
        if task == "drr_enhance":
            params.setdefault("steps", rng.choice([1, 2, "x", -3]))
            params["size"] = rng.choice([16, 24, "big", -1, 100000])
        raw = rng.choice([json.dumps(params, allow_nan=True), json.dumps(params)[:-1], "[" + json.dumps(params) + "]"])
        files = None
        if rng.random() < 0.2:
            files = {"file": (rng.choice(["a.nii.gz", "b.dcm", "c.png", "d", "../../e.nrrd", "f.npy"]),
                              bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600))))}
        return "post", f"/infer/{task}", {"params": {"image": rng.choice(ids)} if not files else {},
                                          "data": {"params": raw}, "files": files}
    if kind < 0.8:
        body = rng.choice([b"{", b"[]", b'{"steps": "abc"}', b'{"init": "/etc/passwd"}', b'{"lr": 5}', b"null",
                           b'{"batch_size": 0}', b'{"crop": []}', b'{"x": 1}', b'{"resume": "maybe"}'])
        return "post", rng.choice(["/train/ddpm_hq_finetune", "/train/nope", "/train/"]), {
            "data": body, "headers": {"content-type": "application/json"}}
    if kind < 0.9:
        return "put", rng.choice(["/datastore/image", "/datastore/label"]), {
            "params": {"image": rng.choice(ids), "tag": rng.choice(["final", "../x", "", "a/b"])},
            "files": {rng.choice(["file", "label"]):
                      ("x.png", b"\x89PNG" + bytes(rng.getrandbits(8) for _ in range(64)))}}
    return "get", rng.choice(["/datastore/image", "/datastore/label", "/datastore/label/info"]), {
        "params": {"image": rng.choice(ids), "label": rng.choice(ids), "tag": rng.choice(["drr", "../x", "final"])}}


def test_request_fuzz_gets_no_500(strict_server):
    srv = strict_server
    rng = random.Random(20261202)
    counts: Counter = Counter()
    failures = []
    for i in range(220):
        method, path, kw = _fuzz_request(rng)
        r = getattr(requests, method)(f"{srv.url}{path}", timeout=60, **kw)
        counts[r.status_code] += 1
        if r.status_code >= 500 and r.status_code not in (503, 504):
            failures.append((method, path, str(kw)[:300], r.status_code, r.text[:300]))
    print("fuzz status codes:", dict(sorted(counts.items())))
    assert not failures, failures[:5]
    assert sum(counts.values()) >= 200
    assert requests.get(f"{srv.url}/info/", timeout=10).status_code == 200
    assert _infer(srv, "drr", "phantom", {"size": 32}).status_code == 200
