"""Fixtures for runpod/ tests: the real provision script against local servers and repos.

Provisioning runs as a subprocess exactly as on a pod (``python3 runpod/provision.py``); only
its inputs point here: a manifest whose URLs name a 127.0.0.1 file server, git remotes that are
local bare repositories (file:// URLs), and a temporary folder as the volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .fake_runpod import FakeRunPod
from .fixtures_http import FileServer
from .fixtures_proxy import AuthProxy, ensure_nginx

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "runpod" / "provision.py"
SECRET_ENV = ("HF_TOKEN", "CIVITAI_TOKEN", "CHARPACK_COMFY_TOKEN", "RUNPOD_API_KEY")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer().start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Remote:
    url: str
    commits: list[str]  # oldest first


def _git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "charpack tests",
        "GIT_AUTHOR_EMAIL": "tests@charpack.invalid",
        "GIT_COMMITTER_NAME": "charpack tests",
        "GIT_COMMITTER_EMAIL": "tests@charpack.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def make_remote(tmp_path: Path) -> Callable[..., Remote]:
    """Create a bare repo with ``n`` commits (file ``version.txt`` = 1..n)."""

    def make(name: str, n: int = 2, files: dict[str, str] | None = None) -> Remote:
        work = tmp_path / "remotes-work" / name
        work.mkdir(parents=True)
        _git("init", "-q", "-b", "main", cwd=work)
        commits = []
        for i in range(1, n + 1):
            (work / "version.txt").write_text(f"{name} {i}\n")
            for rel, text in (files or {}).items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_text(text)
            _git("add", "-A", cwd=work)
            _git("commit", "-q", "-m", f"{name} {i}", cwd=work)
            commits.append(_git("rev-parse", "HEAD", cwd=work))
        bare = tmp_path / "remotes" / f"{name}.git"
        _git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
        return Remote(url=bare.as_uri(), commits=commits)

    return make


def toml_dumps(data: dict[str, Any]) -> str:
    """Just enough TOML for manifests: scalars, lists of scalars, nested tables."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return json.dumps(v)

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f'"{k}" = {scalar(v)}' for k, v in plain.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f'{prefix}."{k}"' if prefix else f'"{k}"', v)

    table("", data)
    return "\n".join(lines) + "\n"


def base_manifest(comfy: Remote, packs: dict[str, Remote]) -> dict[str, Any]:
    return {
        "schema": 1,
        "pod": {"public_port": 8188, "comfy_port": 8189},
        "layout": {
            "comfyui_dir": "ComfyUI",
            "venv_dir": "venv",
            "logs_dir": "logs",
            "state_dir": ".charpack",
            "repo_dir": "charpack",
        },
        "volume": {"reserve_gb": 0},
        "comfyui": {"repo": comfy.url, "version": "0.3.75", "commit": comfy.commits[-1]},
        "node_packs": {
            name: {"repo": r.url, "commit": r.commits[-1], "requirements": False}
            for name, r in packs.items()
        },
        "python": {"pins": [], "exclude": [], "forbidden": [], "apt": []},
        "models": {},
    }


def model_entry(url: str, data: bytes, folder: str, file: str, **extra: Any) -> dict[str, Any]:
    entry = {
        "file": file,
        "folder": folder,
        "url": url,
        "size": len(data),
        "sha256": sha(data),
        "licence": "test",
        "token": "",
    }
    entry.update(extra)
    return entry


@dataclass
class ProvisionRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]

    def outcome(self, step: str, item: str) -> dict[str, Any]:
        found = [o for o in self.report["outcomes"] if (o["step"], o["item"]) == (step, item)]
        assert found, f"no outcome for {step}/{item} in:\n{self.stdout}"
        return found[-1]

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    root.mkdir()
    return root


@pytest.fixture
def provision(tmp_path: Path, volume: Path) -> Callable[..., ProvisionRun]:
    """Run the real provision script with a manifest dict; no apt, no pip (no CUDA here)."""

    def run(
        manifest: dict[str, Any],
        *args: str,
        env: dict[str, str] | None = None,
    ) -> ProvisionRun:
        path = tmp_path / "manifest.toml"
        path.write_text(toml_dumps(manifest))
        report = tmp_path / "report.json"
        report.unlink(missing_ok=True)
        clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        proc = subprocess.run(
            [
                sys.executable,
                str(PROVISION),
                "--manifest",
                str(path),
                "--root",
                str(volume),
                "--repo",
                str(REPO),
                "--skip-apt",
                "--skip-pip",
                "--retry-wait",
                "0",
                "--report-json",
                str(report),
                *args,
            ],
            env={**clean, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        data = json.loads(report.read_text()) if report.exists() else {}
        return ProvisionRun(proc.returncode, proc.stdout, proc.stderr, data)

    return run


# -- the auth proxy (real nginx via runpod/start.py) and the RunPod API stand-in -------------


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    return ensure_nginx()


@pytest.fixture(scope="session")
def comfy_token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def auth_proxy(
    nginx_bin: str, comfy_server: Any, comfy_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthProxy]:
    """nginx with the token in front of the session's real ComfyUI 0.3.75."""
    upstream = comfy_server.url.split("://", 1)[1].rstrip("/")
    proxy = AuthProxy(
        upstream=upstream, token=comfy_token, root=tmp_path_factory.mktemp("proxy-volume")
    )
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def fake_runpod(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunPod]:
    fake = FakeRunPod(api_key="rp_" + secrets.token_hex(16))
    # The SDK's own setting for its GraphQL endpoint (runpod/api/graphql.py).
    monkeypatch.setenv("RUNPOD_API_BASE_URL", fake.url)
    monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
    for name in (
        "CHARPACK_COMFY_TOKEN",
        "CHARPACK_TOKEN",
        "CIVITAI_TOKEN",
        "HF_TOKEN",
        "CHARPACK_RUNPOD_VOLUME_ID",
        "CHARPACK_RUNPOD_PROXY_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    yield fake
    fake.close()
