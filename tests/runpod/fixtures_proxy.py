"""The real auth proxy for tests: Debian's nginx, started by the real runpod/start.py.

`ensure_nginx` installs the Debian package when the machine lacks it (CI machines start
without it; tests run as root). `AuthProxy` runs ``start.py --upstream`` in front of a running
ComfyUI on free 127.0.0.1 ports, waits until ``/charpack/health`` answers with the token, and
stops it with SIGTERM (start.py then stops nginx).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
START = REPO / "runpod" / "start.py"
NGINX_PACKAGE = "nginx-light"


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            f"nginx is missing and tests are not root: apt-get install {NGINX_PACKAGE}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", NGINX_PACKAGE]):
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AuthProxy:
    def __init__(self, *, upstream: str, token: str, root: Path) -> None:
        self.token = token
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # nginx workers run as nobody: the run folder must be reachable from / (pytest's own
        # temp folders are private to root).
        self.run_dir = Path(tempfile.mkdtemp(prefix="charpack-run-"))
        self.logs = root / "logs"
        env = {**os.environ, "CHARPACK_COMFY_TOKEN": token}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(START),
                "--root",
                str(root),
                "--upstream",
                upstream,
                "--listen",
                f"127.0.0.1:{self.port}",
                "--run-dir",
                str(self.run_dir),
                "--no-install-nginx",
                "--ready-timeout",
                "60",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"start.py exited with {self.proc.returncode}:\n{out}")
            try:
                r = requests.get(f"{self.url}/charpack/health", headers=headers, timeout=5)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the auth proxy did not become ready in time")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return int(self.proc.returncode)

    def nginx_log(self) -> str:
        path = self.logs / "nginx.log"
        return path.read_text(errors="replace") if path.exists() else ""
