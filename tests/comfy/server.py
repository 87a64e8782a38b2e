"""Start and stop real ComfyUI 0.3.75 CPU servers for tests (by hand: ``python -m tests.comfy``).

Owns one server's life: its base directory (``custom_nodes/`` with symlinks to charpack's node pack
and the stand-in pack, ``models/`` with a copy of the tiny models, ``input/``, ``output/``), the
process (``Popen`` in a new session, output to ``<base>/server.log``, the torchvision stub on its
``PYTHONPATH`` only), readiness (the process is alive and ``GET /system_stats`` answers 200,
within a deadline) and shutdown (SIGINT, wait, kill; by its own PID only). Every server started
here is also stopped at interpreter exit, so none is ever left running.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.comfy.frontend import Frontend
from tests.comfy.install import REPO, STUBS, ComfyEnv, TestWorldError, ensure_comfy_env

log = logging.getLogger(__name__)

# CHARPACK_TEST_NODE_PACK serves another checkout's node pack (e.g. to see a test fail on the
# code before a fix); the tests themselves always come from this checkout.
NODE_PACK = Path(
    os.environ.get("CHARPACK_TEST_NODE_PACK") or REPO / "custom_nodes" / "charpack_nodes"
)
STANDIN_PACK = REPO / "tests" / "comfy" / "standins"
STANDIN_FOLDER = "charpack_standins"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 60
SECRET_SUFFIXES = ("_TOKEN", "_API_KEY", "_SECRET", "_PASSWORD")
PORT_ATTEMPTS = 3

_RUNNING: set[ComfyServer] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_base_dir(base_dir: Path, *, env: ComfyEnv, with_models: bool = True) -> Path:
    """Lay out a ComfyUI ``--base-directory``; existing files (a restart's) are kept."""
    custom = base_dir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    for name, target in ((NODE_PACK.name, NODE_PACK), (STANDIN_FOLDER, STANDIN_PACK)):
        link = custom / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    for sub in ("input", "output", "temp", "user"):
        (base_dir / sub).mkdir(exist_ok=True)
    models = base_dir / "models"
    if with_models and not models.exists():
        # A copy, not links: tests may add, remove or corrupt model files in their own server.
        shutil.copytree(env.models, models)
    return base_dir


@dataclass(eq=False)
class ComfyServer:
    """One ComfyUI process on 127.0.0.1 with its own base directory."""

    env: ComfyEnv
    base_dir: Path
    port: int
    extra_args: tuple[str, ...] = ()
    standin_step_seconds: float = 0.0
    # The real graph editor (tests/comfy/frontend.py), or None for the empty front-end root.
    frontend: Frontend | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    def command(self) -> list[str]:
        web = self.frontend.static if self.frontend else self.env.front_end_root
        return [
            str(self.env.python), str(self.env.comfy_dir / "main.py"),
            "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--front-end-root", str(web),
            "--disable-api-nodes", "--database-url", "sqlite:///:memory:", "--log-stdout",
            *self.extra_args,
        ]  # fmt: skip

    def process_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        env.update(
            # The torchvision stub, for the server only; with the real editor also the frontend's
            # folder, from which ComfyUI imports the workflow templates and embedded docs.
            PYTHONPATH=os.pathsep.join(
                [str(STUBS)] + ([str(self.frontend.packages)] if self.frontend else [])
            ),
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            DO_NOT_TRACK="1",
            CHARPACK_STANDINS="1",  # lets the stand-in pack swap the model-bound core nodes
            CHARPACK_STANDIN_STEP_SECONDS=str(self.standin_step_seconds),
        )
        return env

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> ComfyServer:
        """Start the process and return once it serves ``/system_stats``."""
        if self.proc is not None and self.proc.poll() is None:
            raise TestWorldError(f"server on port {self.port} is already running")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.base_dir, env=self.process_env(),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _RUNNING.add(self)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                # Waiting on the process doubles as the poll interval and sees an early exit.
                rc = self.proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                rc = None
            if rc is not None:
                _RUNNING.discard(self)
                raise TestWorldError(
                    f"ComfyUI exited with code {rc} while starting on port {self.port}.\n"
                    f"Log {self.log_path}:\n{self.log_tail()}"
                )
            if self._answers():
                log.info("ComfyUI ready at %s in %.1f s", self.url, time.monotonic() - started)
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TestWorldError(
                    f"ComfyUI on port {self.port} did not answer /system_stats within "
                    f"{timeout:.0f} s.\nLog {self.log_path}:\n{self.log_tail()}"
                )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/system_stats", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGINT (ComfyUI's clean exit), then kill after ``timeout``; returns the exit code."""
        proc, self.proc = self.proc, None
        _RUNNING.discard(self)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("ComfyUI on port %d ignored SIGINT; killing it", self.port)
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
        self.proc = None
        _RUNNING.discard(self)

    def restart(self, *, port: int | None = None) -> ComfyServer:
        """Stop and start again on the same base directory (same files; new port if given)."""
        self.stop()
        if port is not None:
            self.port = port
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ComfyServer:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    base_dir: Path,
    *,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    with_models: bool = True,
    standin_step_seconds: float = 0.0,
    env: ComfyEnv | None = None,
    frontend: Frontend | None = None,
) -> ComfyServer:
    """Build (or reuse) the environment, lay out ``base_dir`` and start a ready server.

    ``extra_args`` are more ComfyUI flags (e.g. ``("--cache-none",)``); ``standin_step_seconds``
    makes every stand-in sampler step take that long (for tests that must catch a job running).
    """
    env = env or ensure_comfy_env()
    prepare_base_dir(base_dir, env=env, with_models=with_models)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = ComfyServer(
            env=env, base_dir=base_dir, port=port or free_port(), extra_args=tuple(extra_args),
            standin_step_seconds=standin_step_seconds, frontend=frontend,
        )  # fmt: skip
        try:
            return server.start()
        except TestWorldError:
            # A free port can be taken by someone else before ComfyUI binds it: pick another.
            taken = "address already in use" in server.log_tail(20).lower()
            if port is not None or not taken or attempt == PORT_ATTEMPTS:
                raise
            log.warning("port %d was taken before ComfyUI bound it; retrying", server.port)
    raise AssertionError("unreachable")


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
