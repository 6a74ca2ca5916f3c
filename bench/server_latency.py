"""GET /info/ latency of the MONAI Label app while 4 enhancements run, against the same server idle (same run).

    python bench/server_latency.py [--concurrent 4] [--size 256] [--steps 20] [--workers 1]

Starts a real ``monailabel start_server --app monailabel_app`` on 127.0.0.1 with a phantom study, measures
``/info/`` 50 times idle (the peer), then sends ``--concurrent`` ``drr_enhance`` requests at once and polls
``/info/`` every 0.1 s until they are all answered. Prints p50/p99 of both and the loaded/idle ratio; the issue's
goal is p50 <= 1 s while enhancing (MONAI Label 0.8.5's own handler answered /info only after the running
enhancement, 10-30 s).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _info_ms(url: str) -> float:
    t0 = time.perf_counter()
    r = requests.get(f"{url}/info/", timeout=120)
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="DRR side; the enhancement is 2x that")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import SimpleITK as sitk

    from dxr_core.phantom import make_chest_phantom

    work = Path(tempfile.mkdtemp(prefix="dxr-latency-"))
    studies = work / "studies"
    studies.mkdir()
    sitk.WriteImage(make_chest_phantom(seed=0, spacing_mm=5.0).to_sitk(), str(studies / "phantom.nrrd"), True)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MONAI_LABEL_AUTO_UPDATE_SCORING="false", MONAI_LABEL_TRACKING_ENABLED="false",
               MONAI_LABEL_SESSION_PATH=str(work / "sessions"), PYTHONPATH=str(ROOT))
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(ROOT / "monailabel_app"),
           "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
           "--conf", "workers", str(args.workers), "--conf", "work_dir", str(work / "appwork"),
           "--conf", "model_dir", str(work / "model")]
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        _enhance = {"size": args.size, "steps": args.steps, "sampler": "ddim"}
        warm = requests.post(f"{url}/infer/drr_enhance", params={"image": "phantom", "output": "json"},
                             data={"params": json.dumps(dict(_enhance, steps=2))}, timeout=600)
        warm.raise_for_status()  # model loaded, kernels warm
        idle = [_info_ms(url) for _ in range(50)]

        codes: list = []

        def enhance(seed: int):
            r = requests.post(f"{url}/infer/drr_enhance", params={"image": "phantom", "output": "json"},
                              data={"params": json.dumps(dict(_enhance, seed=seed))}, timeout=1800)
            codes.append(r.status_code)

        threads = [threading.Thread(target=enhance, args=(i,)) for i in range(args.concurrent)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(0.5)
        loaded = []
        while any(t.is_alive() for t in threads):
            loaded.append(_info_ms(url))
            time.sleep(0.1)
        total = time.perf_counter() - t0
        for t in threads:
            t.join()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    print(f"server_latency: idle          GET /info/ p50 {p(idle, 50):7.1f} ms  p99 {p(idle, 99):7.1f} ms  "
          f"({len(idle)} calls)")
    print(f"server_latency: {args.concurrent} enhancing   GET /info/ p50 {p(loaded, 50):7.1f} ms  "
          f"p99 {p(loaded, 99):7.1f} ms  ({len(loaded)} calls over {total:.0f} s; {args.concurrent} x "
          f"{2 * args.size}^2, {args.steps} evals, {args.workers} worker(s); answers {sorted(codes)})")
    print(f"server_latency: ratio p50 loaded/idle {p(loaded, 50) / p(idle, 50):.1f}x; goal p50 <= 1000 ms: "
          f"{'MET' if p(loaded, 50) <= 1000 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
