"""Waiting for a pod's ComfyUI through RunPod's proxy, and reading its provisioning report.

Talks to the auth proxy that ``runpod/start.py`` puts in front of ComfyUI (see
``runpod/nginx.conf.template``): ``/charpack/health`` answers 200 when ComfyUI is up, 503 with
``{"phase": ...}`` while the pod provisions or starts, 401 when our token is not the pod's.
Before nginx runs, RunPod's proxy itself answers (502/404) or the connection fails; both mean
"not yet". No request waits long: the proxy cuts anything past ~100 s. Requests go through
the orchestrator's one HTTP stack (:class:`~charpack.comfy.transport.HttpCore`: no proxies or
netrc from the environment, no redirects followed, the token registered for redaction), one
try each: the callers poll.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import requests

from ..comfy.auth import ServerConfig
from ..comfy.transport import HttpCore
from ..errors import AuthError, PodError, ServerUnavailable, TimeoutExceeded

log = logging.getLogger(__name__)
PROXY_URL_ENV = "CHARPACK_RUNPOD_PROXY_URL"
DEFAULT_PROXY_URL = "https://{pod_id}-{port}.proxy.runpod.net"


def proxy_url(*, pod_id: str, port: int) -> str:
    """The pod's public URL. ``$CHARPACK_RUNPOD_PROXY_URL`` (a template with ``{pod_id}`` and
    ``{port}``) replaces RunPod's proxy, e.g. for a pod reached through a TCP port or a tunnel."""
    template = os.environ.get(PROXY_URL_ENV, "").strip() or DEFAULT_PROXY_URL
    return template.format(pod_id=pod_id, port=port).rstrip("/")


_ANY_STATUS = tuple(range(100, 600))  # every answer is the caller's to read


def _get(url: str, token: str, path: str, timeout: float) -> requests.Response:
    """``GET`` ``path`` on the pod once; :class:`ServerUnavailable` when it cannot be reached."""
    config = ServerConfig(url=url, headers={"Authorization": f"Bearer {token}"}, name=url)
    http = HttpCore(
        config=config, connect_timeout=timeout, read_timeout=min(timeout, 60), attempts=1
    )
    try:
        # Not streamed: the body is read before the session closes.
        return http.request("GET", path, what=f"GET {path}", ok=_ANY_STATUS)
    finally:
        http.close()


def check_health(*, url: str, token: str, timeout: float = 15) -> tuple[bool, str]:
    """One probe: (ready, what the pod is doing). Raises `AuthError` on a refused token."""
    try:
        resp = _get(url, token, "/charpack/health", timeout)
    except ServerUnavailable as exc:
        return False, f"not reachable yet ({_reason(str(exc))})"
    with resp:
        if resp.status_code == 200 and resp.headers.get("X-Charpack-Proxy"):
            return True, "ready"
        if resp.status_code == 401:
            raise AuthError(
                f"the pod at {url} refused our token: the pod was created with another "
                "CHARPACK_TOKEN. Export the token the pod was created with, or replace "
                "the pod: charpack pod down --terminate, then charpack pod up"
            )
        if resp.status_code == 503 and resp.headers.get("X-Charpack-Proxy"):
            status = _json(resp)
            if status.get("phase") == "failed":
                raise PodError(
                    f"the pod could not start ComfyUI: {status.get('detail', '?')}; see "
                    "/workspace/logs/ on the volume (comfyui.log, provision.log)"
                )
            return False, f"{status.get('phase', 'starting')}: {status.get('detail', '')}".strip()
        return False, f"proxy answered HTTP {resp.status_code} (pod still starting)"


def wait_healthy(
    *,
    url: str,
    token: str,
    deadline: float,
    on_progress: Callable[[str], None] | None = None,
    poll_s: float = 5.0,
) -> None:
    """Probe until ready or ``deadline`` (a ``time.monotonic()`` value)."""
    last = ""
    while True:
        ready, what = check_health(url=url, token=token)
        if ready:
            return
        if what != last:
            log.info("pod %s: %s", url, what)
            if on_progress:
                on_progress(what)
            last = what
        if time.monotonic() + poll_s > deadline:
            raise TimeoutExceeded(
                f"the pod at {url} was not ready in time (last: {what}); it keeps running and "
                "billing: check it with charpack pod status, or stop it with charpack pod down"
            )
        time.sleep(poll_s)


def provision_failures(*, url: str, token: str) -> list[str]:
    """The failures of the pod's last provisioning run, one line each (empty if none/unknown)."""
    try:
        resp = _get(url, token, "/charpack/provision", 15)
    except ServerUnavailable:
        return []
    with resp:
        if resp.status_code != 200:
            return []
        report = _json(resp)
    lines = []
    for o in report.get("outcomes", []):
        if o.get("status") == "failed":
            fix = f" (fix: {o['fix']})" if o.get("fix") else ""
            lines.append(f"{o.get('step')} {o.get('item')}: {o.get('detail')}{fix}")
    return lines


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reason(message: str) -> str:
    """The failure :class:`HttpCore` names ("… failed 1 times (ConnectionError: …)")."""
    match = re.search(r"failed \d+ times \((\w+)", message)
    return match.group(1) if match else "no answer"
