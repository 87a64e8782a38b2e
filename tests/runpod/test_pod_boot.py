"""A pod's boot on CPU: runpod/start.sh on an empty volume ends with ComfyUI behind the token.

Everything a pod runs is real: start.sh → start.py → provision.py (git checkout of ComfyUI
0.3.75 from a local bare repository made from the test environment's tree, the shipped
manifest's model list served from 127.0.0.1 as the tiny test models, the checkpoint as the
CivitAI version the user chose, from a local CivitAI stand-in) → nginx → ComfyUI.
Only apt and pip are skipped (no CUDA here): the volume's venv is the CPU test venv.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tomllib

from tests.comfy.install import STUBS, ComfyEnv

from .conftest import REPO, Remote, _git, toml_dumps
from .fake_civitai import FakeCivitai, VersionFile
from .fixtures_http import FileServer
from .fixtures_proxy import free_port

pytestmark = [pytest.mark.nginx, pytest.mark.server]
START_SH = REPO / "runpod" / "start.sh"
CIVITAI_TOKEN = "civ" + "b7" * 20
VERSION = 1744439


@pytest.fixture(scope="module")
def comfy_remote(comfy_env: ComfyEnv, tmp_path_factory: pytest.TempPathFactory) -> Remote:
    """The test environment's ComfyUI 0.3.75 tree as a git repository to clone from."""
    env = comfy_env
    work = tmp_path_factory.mktemp("comfy-src") / "ComfyUI"
    shutil.copytree(env.comfy_dir, work, ignore=shutil.ignore_patterns("__pycache__"))
    _git("init", "-q", "-b", "master", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "ComfyUI 0.3.75 (test copy)", cwd=work)
    commit = _git("rev-parse", "HEAD", cwd=work)
    bare = work.parent / "ComfyUI.git"
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=work.parent)
    return Remote(url=bare.as_uri(), commits=[commit])


def _boot_manifest(
    env: ComfyEnv, remote: Remote, server: FileServer, comfy_port: int
) -> dict[str, Any]:
    """The shipped manifest, pointed at local sources; models = the tiny test models (the
    CivitAI checkpoint as version VERSION of the CivitAI stand-in on ``server``)."""
    manifest = tomllib.loads((REPO / "runpod" / "manifest.toml").read_text())
    tiny = env.models
    manifest["comfyui"].update(repo=remote.url, commit=remote.commits[0])
    manifest["node_packs"] = {}  # third-party packs need the network (checked in test_provision)
    manifest["pod"]["comfy_port"] = comfy_port
    manifest["volume"]["reserve_gb"] = 0
    for key, model in manifest["models"].items():
        rel = f"{model['folder']}/{model['file']}"
        path = tiny / rel
        data = path.read_bytes() if path.exists() else hashlib.sha256(rel.encode()).digest() * 8
        if "civitai_model" in model:
            civitai = FakeCivitai(server, CIVITAI_TOKEN)
            civitai.add_version(VERSION, [VersionFile(model["file"], data)])
            continue
        model.update(
            url=server.add(f"/{key}", data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            token="",
        )
        model.pop("approx_size", None)
    return manifest


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """start.py's run folder, outside pytest's private temp tree: nginx workers run as nobody."""
    path = Path(tempfile.mkdtemp(prefix="charpack-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _boot(
    env: ComfyEnv,
    volume: Path,
    manifest: Path,
    port: int,
    token: str,
    run_dir: Path,
    civitai_port: int,
) -> subprocess.Popen[bytes]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")},
        "CHARPACK_COMFY_TOKEN": token,
        "CHARPACK_ROOT": str(volume),
        "CHARPACK_PROVISION_ARGS": "--skip-apt --skip-pip --retry-wait 0 "
        f"--civitai-api http://127.0.0.1:{civitai_port}",
        # What `charpack pod up --civitai-version` puts in the pod's environment.
        "CHARPACK_CIVITAI_VERSIONS": f"biglove_xl={VERSION}",
        "CIVITAI_TOKEN": CIVITAI_TOKEN,
        "CHARPACK_COMFY_ARGS": f"--cpu --front-end-root {env.front_end_root} "
        "--disable-api-nodes --database-url sqlite:///:memory:",
        "PYTHONPATH": str(STUBS),  # the torchvision import stub, as the CPU test server uses
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [
            "bash",
            str(START_SH),
            "--manifest",
            str(manifest),
            "--listen",
            f"127.0.0.1:{port}",
            "--run-dir",
            str(run_dir),
            "--no-install-nginx",
            "--ready-timeout",
            "120",
        ],
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_health(url: str, token: str, proc: subprocess.Popen[bytes]) -> requests.Response:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"start.sh exited with {proc.returncode}"
        try:
            r = requests.get(
                f"{url}/charpack/health", timeout=5, headers={"Authorization": f"Bearer {token}"}
            )
            if r.status_code == 200:
                return r
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError("the pod did not become ready")


def _shutdown(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def test_an_empty_volume_boots_to_a_token_protected_comfyui_and_reboots_without_work(
    nginx_bin: str,
    comfy_env: ComfyEnv,
    comfy_remote: Remote,
    file_server: FileServer,
    tmp_path: Path,
    run_dir: Path,
):
    token = "boot_" + "Z9" * 20
    volume = tmp_path / "workspace"
    volume.mkdir()
    # What the skipped pip step would have made: a venv on the volume (here the CPU one).
    (volume / "venv").symlink_to(comfy_env.python.parent.parent)
    port, comfy_port = free_port(), free_port()
    manifest_path = tmp_path / "manifest.toml"
    manifest_path.write_text(
        toml_dumps(_boot_manifest(comfy_env, comfy_remote, file_server, comfy_port))
    )
    url = f"http://127.0.0.1:{port}"

    proc = _boot(comfy_env, volume, manifest_path, port, token, run_dir, file_server.port)
    try:
        health = _wait_health(url, token, proc)
        argv = health.json()["system"]["argv"]
        assert argv[argv.index("--listen") + 1] == "127.0.0.1"  # ComfyUI: loopback only
        assert requests.get(f"{url}/system_stats", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        report = requests.get(f"{url}/charpack/provision", headers=auth, timeout=10).json()
        assert report["ok"] is True, report
        listed = requests.get(f"{url}/models/upscale_models", headers=auth, timeout=10).json()
        assert listed == ["4x-UltraSharp.pth"]
        assert (volume / "ComfyUI/custom_nodes/charpack_nodes").is_symlink()
        ckpt = [o for o in report["outcomes"] if o["item"] == "biglove_xl"]
        assert [o["detail"] for o in ckpt] == [
            f"downloaded and verified (CivitAI version {VERSION} sha256)"
        ]
        listed = requests.get(f"{url}/models/checkpoints", headers=auth, timeout=10).json()
        assert "bigLoveXL.safetensors" in listed
    finally:
        assert _shutdown(proc) == 0
    logs = volume / "logs"
    assert {"comfyui.log", "nginx.log", "provision.log"} <= {p.name for p in logs.iterdir()}
    written = "".join(p.read_text(errors="replace") for p in logs.iterdir())
    assert token not in written and CIVITAI_TOKEN not in written
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/charpack/health", timeout=5)
    downloads = len(file_server.requests)

    # A restarted pod provisions again: nothing to download, nothing to change.
    proc = _boot(comfy_env, volume, manifest_path, port, token, run_dir, file_server.port)
    try:
        _wait_health(url, token, proc)
        report = requests.get(
            f"{url}/charpack/provision", timeout=10, headers={"Authorization": f"Bearer {token}"}
        ).json()
    finally:
        assert _shutdown(proc) == 0
    assert len(file_server.requests) == downloads
    assert {o["status"] for o in report["outcomes"]} <= {"ok", "skipped"}, report
