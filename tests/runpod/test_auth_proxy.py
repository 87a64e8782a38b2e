"""The auth proxy (real nginx started by runpod/start.py) in front of the real CPU ComfyUI."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from .fixtures_proxy import START, AuthProxy

pytestmark = [pytest.mark.nginx, pytest.mark.server]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _graph(prefix: str, color: int) -> dict[str, Any]:
    return {
        "img": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color},
        },
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["img", 0], "filename_prefix": prefix},
        },
    }


def _ws(proxy: AuthProxy, client_id: str, **kw: Any) -> websocket.WebSocket:
    query = kw.pop("query", "")
    return websocket.create_connection(
        f"ws://127.0.0.1:{proxy.port}/ws?clientId={client_id}{query}", timeout=30, **kw
    )


def test_no_token_gets_401_with_the_fix_and_nothing_reaches_comfyui(auth_proxy: AuthProxy):
    prompt_id = str(uuid.uuid4())
    body = {"prompt": _graph(f"denied-{prompt_id[:8]}", 0x102030), "prompt_id": prompt_id}

    refused = requests.post(f"{auth_proxy.url}/prompt", json=body, timeout=30)

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "CHARPACK_TOKEN" in refused.json()["fix"]
    history = requests.get(
        f"{auth_proxy.url}/history/{prompt_id}", headers=_bearer(auth_proxy.token), timeout=30
    )
    assert history.status_code == 200 and history.json() == {}


@pytest.mark.parametrize(
    "how",
    ["Bearer wrong-token-but-long-enough-0123456789", "bearer {upper}", "Basic {token}"],
)
def test_a_wrong_or_altered_token_gets_401(auth_proxy: AuthProxy, how: str):
    header = how.format(token=auth_proxy.token, upper=auth_proxy.token.upper())
    r = requests.get(
        f"{auth_proxy.url}/system_stats", headers={"Authorization": header}, timeout=30
    )
    assert r.status_code == 401
    r = requests.get(f"{auth_proxy.url}/system_stats?token={auth_proxy.token}x", timeout=30)
    assert r.status_code == 401


def test_websocket_without_the_token_is_refused(auth_proxy: AuthProxy):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _ws(auth_proxy, "no-token")
    assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as wrong:
        _ws(auth_proxy, "wrong", query="&token=" + "x" * 43)
    assert wrong.value.status_code == 401


@pytest.mark.parametrize("where", ["header", "query", "cookie"])
def test_the_token_is_accepted_as_header_query_or_cookie(auth_proxy: AuthProxy, where: str):
    token = auth_proxy.token
    kwargs: dict[str, Any] = {
        "header": {"headers": _bearer(token)},
        "query": {"params": {"token": token}},
        "cookie": {"cookies": {"charpack_token": token}},
    }[where]
    r = requests.get(f"{auth_proxy.url}/system_stats", timeout=30, **kwargs)
    assert r.status_code == 200
    assert r.json()["system"]["comfyui_version"] == "0.3.75"
    if where == "query":  # a browser opening /?token=... once keeps working through the cookie
        assert "charpack_token=" in r.headers["Set-Cookie"]


def test_a_prompt_runs_through_the_proxy_and_the_websocket_delivers_its_events(
    auth_proxy: AuthProxy, comfy_server: Any
):
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    prefix = f"proxy-{prompt_id[:8]}"
    ws = _ws(auth_proxy, client_id, query=f"&token={auth_proxy.token}")
    try:
        posted = requests.post(
            f"{auth_proxy.url}/prompt",
            json={
                "prompt": _graph(prefix, 0x336699),
                "client_id": client_id,
                "prompt_id": prompt_id,
            },
            headers=_bearer(auth_proxy.token),
            timeout=30,
        )
        assert posted.status_code == 200, posted.text
        deadline = time.monotonic() + 120
        done = False
        while not done and time.monotonic() < deadline:
            message = ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                data = event.get("data", {})
                done = (
                    event["type"] == "executing"
                    and data.get("node") is None
                    and data.get("prompt_id") == prompt_id
                )
        assert done, "no completion event through the proxy's websocket"
    finally:
        ws.close()
    history = requests.get(
        f"{auth_proxy.url}/history/{prompt_id}", headers=_bearer(auth_proxy.token), timeout=30
    ).json()
    (image,) = history[prompt_id]["outputs"]["save"]["images"]
    view = requests.get(
        f"{auth_proxy.url}/view", params={**image}, headers=_bearer(auth_proxy.token), timeout=60
    )
    assert view.status_code == 200
    on_server = comfy_server.output_dir / image["subfolder"] / image["filename"]
    assert view.content == on_server.read_bytes()
    assert Image.open(io.BytesIO(view.content)).size == (64, 48)


def test_large_uploads_and_downloads_pass_through(auth_proxy: AuthProxy, comfy_server: Any):
    # ~12 MB of incompressible pixels: far past nginx's 1 MB default body limit.
    noise = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="PNG", compress_level=0)
    payload = buf.getvalue()
    # A subfolder keeps the shared server's LoadImage list (top-level input files) unchanged.
    folder = f"proxy-{uuid.uuid4().hex[:8]}"

    up = requests.post(
        f"{auth_proxy.url}/upload/image",
        headers=_bearer(auth_proxy.token),
        files={"image": ("big.png", payload, "image/png")},
        data={"subfolder": folder},
        timeout=120,
    )

    try:
        assert up.status_code == 200, up.text
        down = requests.get(
            f"{auth_proxy.url}/view",
            headers=_bearer(auth_proxy.token),
            params={"filename": up.json()["name"], "subfolder": folder, "type": "input"},
            timeout=120,
        )
        assert down.status_code == 200 and down.content == payload
        assert len(payload) > 10_000_000
    finally:
        shutil.rmtree(comfy_server.input_dir / folder, ignore_errors=True)


def test_the_token_never_reaches_the_nginx_log(auth_proxy: AuthProxy):
    token = auth_proxy.token
    requests.get(f"{auth_proxy.url}/system_stats", params={"token": token}, timeout=30)
    # A body over the limit makes nginx write the request line (query included) to its error
    # log; start.py must redact it.
    with socket.create_connection(("127.0.0.1", auth_proxy.port), timeout=30) as s:
        s.sendall(
            f"POST /upload/image?token={token} HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 900000000\r\n\r\n".encode()
        )
        assert b" 413 " in s.recv(200)
    deadline = time.monotonic() + 10
    while "too large body" not in auth_proxy.nginx_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = auth_proxy.nginx_log()
    assert "too large body" in log and "token=<redacted>" in log
    assert token not in log


def test_health_says_what_the_pod_is_doing_until_comfyui_answers(nginx_bin: str, tmp_path: Path):
    token = "t" * 40
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody listens on: ComfyUI "not up yet"
    port = closed.getsockname()[1]
    proxy = AuthProxy(upstream=f"127.0.0.1:{port}", token=token, root=tmp_path)
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = requests.get(
                    f"{proxy.url}/charpack/health", headers=_bearer(token), timeout=5
                )
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert answer is not None and answer.status_code == 503
        assert answer.headers["X-Charpack-Proxy"] == "1"
        assert answer.json()["phase"] == "starting"
        assert requests.get(f"{proxy.url}/charpack/health", timeout=5).status_code == 401
    finally:
        assert proxy.stop() == 0
        closed.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/charpack/health", timeout=5)


@pytest.mark.parametrize("token", ["", "short", "x" * 31, "has spaces " * 4])
def test_start_refuses_to_expose_comfyui_without_a_strong_token(token: str, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "CHARPACK_COMFY_TOKEN"}
    if token:
        env["CHARPACK_COMFY_TOKEN"] = token
    proc = subprocess.run(
        [
            sys.executable,
            str(START),
            "--root",
            str(tmp_path),
            "--upstream",
            "127.0.0.1:9",
            "--run-dir",
            str(tmp_path / "run"),
            "--no-install-nginx",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "refusing to start ComfyUI without a valid token" in proc.stderr
    assert "secrets.token_urlsafe(32)" in proc.stderr
    assert not (tmp_path / "run" / "nginx.conf").exists()
