"""Start and stop a real `monailabel start_server --app monailabel_app` process for tests (127.0.0.1, free port)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "monailabel_app"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(work: Path) -> dict[str, str]:
    """Offline, self-contained settings: no scoring jobs, sessions under ``work``, small thread pools."""
    env = dict(os.environ)
    env.update({
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
        "MONAI_LABEL_TRACKING_ENABLED": "false",
        "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2"),
        "PYTHONUNBUFFERED": "1",
    })
    # the app imports dxr_core; without the editable install the repository root must be importable
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class MonaiLabelServer:
    def __init__(self, studies: Path, work: Path, conf: dict[str, str] | None = None,
                 env: dict[str, str] | None = None):
        self.studies, self.work, self.conf = Path(studies), Path(work), dict(conf or {})
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work / "server.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "monailabel"
        # The `monailabel` launcher runs `python -m monailabel.main`; call the same module with this interpreter.
        cmd = [sys.executable, "-m", "monailabel.main"] if not script.exists() else [str(script)]
        cmd += ["start_server", "--app", str(APP_DIR), "--studies", str(self.studies),
                "--host", "127.0.0.1", "--port", str(self.port)]
        for k, v in self.conf.items():
            cmd += ["--conf", k, str(v)]
        return cmd

    def start(self, timeout: float = 120.0) -> "MonaiLabelServer":
        self.work.mkdir(parents=True, exist_ok=True)
        env = server_env(self.work)
        env.update(self.extra_env)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env["MONAILABEL_PYEXE"] = sys.executable
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"monailabel exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"monailabel did not answer /info within {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def server_pid(self) -> int:
        """pid of the uvicorn process (the launcher script execs python, so it is the same process)."""
        import psutil

        p = psutil.Process(self.pid)
        for c in [p, *p.children(recursive=True)]:
            if "monailabel.main" in " ".join(c.cmdline()):
                return c.pid
        return self.pid

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
