"""Fixtures of the Serverless tests: a real S3 API (moto's server) and charpack's real worker.

- ``s3`` (session): a ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with one bucket; this
  process's environment points boto3 and charpack at it (``CHARPACK_S3_*``, ``AWS_*``) for the
  session, and :attr:`S3.env` is the same for child processes. ``s3.store()`` is charpack's own
  :class:`~charpack.serverless.objects.ObjectStore` on it, ``s3.client`` a plain boto3 client.
- ``worker_factory``: starts ``python serverless/handler.py --rp_serve_api --rp_api_host
  127.0.0.1 --rp_api_port <free>`` (the real runpod SDK's local API serving charpack's handler)
  pointed at a ComfyUI (default: the session's ``comfy_server``) through ``CHARPACK_COMFY_URL``,
  with ``env`` overrides; each is stopped when the test ends. A :class:`LocalWorker` has
  ``.url``, ``.proc``, ``.log_path``, ``.runsync(input)``, ``.kill()`` and ``.stop()``.
- ``local_worker`` (session): one such worker on the shared server and bucket. Never stop it;
  use ``worker_factory`` for a worker a test kills.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from charpack.serverless.objects import ObjectStore, S3Config
from tests.comfy.server import ComfyServer, free_port

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "serverless" / "handler.py"
BUCKET = "charpack-test"
PREFIX = "charpack"
START_S = 60.0  # the SDK imports FastAPI and uvicorn; two busy cores can take a while
RUNSYNC_S = 600.0


@dataclass
class S3:
    """The session's moto S3 server and its bucket."""

    endpoint_url: str
    bucket: str
    prefix: str
    env: dict[str, str]
    client: Any = field(repr=False)

    def store(self, **changes: str) -> ObjectStore:
        """charpack's store on this server (``bucket=`` / ``prefix=`` to change them)."""
        config = S3Config(
            bucket=changes.get("bucket", self.bucket),
            prefix=changes.get("prefix", self.prefix),
            endpoint_url=self.endpoint_url,
        )
        return ObjectStore(config)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in the bucket, in key order."""
        return list(self.store().keys(prefix))

    def write_order(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` in the order the server stored them (moto's own record,
        microsecond timestamps: S3's listing gives whole seconds)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[self.bucket]
        stored = [(v.last_modified, k) for k, v in bucket.keys.items() if k.startswith(prefix)]
        return [k for _, k in sorted(stored)]


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A real S3 API on loopback (moto's threaded server), one bucket, env set for boto3."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "charpack-test-key",
        "AWS_SECRET_ACCESS_KEY": "charpack-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CHARPACK_S3_ENDPOINT_URL": endpoint,
        "CHARPACK_S3_BUCKET": BUCKET,
        "CHARPACK_S3_PREFIX": PREFIX,
    }
    patch = pytest.MonkeyPatch()
    try:
        for name, value in env.items():
            patch.setenv(name, value)
        import boto3

        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield S3(endpoint_url=endpoint, bucket=BUCKET, prefix=PREFIX, env=env, client=client)
    finally:
        patch.undo()
        server.stop()


@dataclass(eq=False)
class LocalWorker:
    """charpack's handler served by the runpod SDK's local API, in its own process."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def runsync(self, job_input: dict[str, Any], *, timeout_s: float = RUNSYNC_S) -> Any:
        """``POST /runsync`` ``{"input": job_input}``: the SDK's answer, ``{id, status,
        output | error}``."""
        answer = requests.post(f"{self.url}/runsync", json={"input": job_input}, timeout=timeout_s)
        answer.raise_for_status()
        return answer.json()

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_s: float = START_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the local worker exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the local worker did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL (a worker lost mid-job)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_worker(
    *, comfy_url: str, s3: S3, folder: Path, env: dict[str, str] | None = None
) -> LocalWorker:
    """Start one local worker (see the module docstring) and wait until it serves."""
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    child.update(s3.env)
    child.update(CHARPACK_COMFY_URL=comfy_url, PYTHONUNBUFFERED="1")
    child.update(env or {})
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HANDLER), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
             "--rp_api_port", str(port), "--rp_log_level", "INFO"],
            cwd=folder, env=child, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    worker = LocalWorker(port=port, proc=proc, log_path=log_path, env=child)
    try:
        worker.wait_ready()
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture
def worker_factory(
    comfy_server: ComfyServer, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LocalWorker]]:
    """``make(env=None, comfy_url=None)``: a private local worker, stopped when the test ends."""
    started: list[LocalWorker] = []

    def make(*, env: dict[str, str] | None = None, comfy_url: str | None = None) -> LocalWorker:
        worker = start_worker(
            comfy_url=comfy_url or comfy_server.url,
            s3=s3,
            folder=tmp_path_factory.mktemp("worker"),
            env=env,
        )
        started.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture(scope="session")
def local_worker(
    comfy_server: ComfyServer, s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorker]:
    """The session's local worker on the shared ComfyUI and bucket (never stop it)."""
    worker = start_worker(
        comfy_url=comfy_server.url, s3=s3, folder=tmp_path_factory.mktemp("worker-shared")
    )
    try:
        yield worker
    finally:
        worker.stop()
