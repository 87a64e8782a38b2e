"""What a charpack pod is: its settings from runpod/manifest.toml, its token, its description.

Owns `PodSpec` (what `charpack pod up` creates, read from the manifest's ``[pod]``,
``[layout]`` and ``[charpack]`` tables plus options: the charpack ref is this client's version,
see `charpack.pod.version`; the CivitAI versions the user chose for the manifest's CivitAI
entries), `PodInfo` (one pod as charpack reports it) and the ComfyUI token rule shared with
``runpod/start.py``. No network I/O here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..comfy.auth import ServerConfig, register_secret
from ..errors import PodError
from . import version as pod_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOKEN_ENV = "CHARPACK_TOKEN"  # the one variable users set: the client sends it (auth.py)
POD_TOKEN_ENV = "CHARPACK_COMFY_TOKEN"  # its name inside the pod (start.py); accepted here too
VOLUME_ENV = "CHARPACK_RUNPOD_VOLUME_ID"
MANIFEST_ENV = "CHARPACK_POD_MANIFEST"
PASSED_SECRETS = ("CIVITAI_TOKEN", "HF_TOKEN")  # forwarded so the pod can download models
# The CivitAI versions chosen ("biglove_xl=1744439,..."): the pod's provisioning reads the same
# variable (runpod/provision.py); on the client it stands in for --civitai-version.
CIVITAI_VERSIONS_ENV = "CHARPACK_CIVITAI_VERSIONS"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")  # the same rule as runpod/start.py
DEFAULT_NAME = "charpack"


@dataclass(frozen=True)
class PodSpec:
    name: str
    image: str
    gpu_type: str
    cloud_type: str
    allowed_cuda_versions: tuple[str, ...]
    container_disk_gb: int
    volume_mount: str
    public_port: int
    repo_dir: str
    repo_url: str
    repo_ref: str
    network_volume_id: str = ""
    provision_args: tuple[str, ...] = ()
    # The manifest's CivitAI entries: (key, CivitAI model id); and the versions chosen for them
    # (--civitai-version, CHARPACK_CIVITAI_VERSIONS or the manifest's civitai_version).
    civitai_entries: tuple[tuple[str, int], ...] = ()
    civitai_versions: tuple[tuple[str, int], ...] = ()

    def civitai_unchosen(self) -> list[tuple[str, int]]:
        chosen = {key for key, _ in self.civitai_versions}
        return [(key, model) for key, model in self.civitai_entries if key not in chosen]


@dataclass(frozen=True)
class PodInfo:
    pod_id: str
    name: str
    status: str  # RunPod's desiredStatus: RUNNING, EXITED, ...
    url: str
    gpu: str | None = None
    cost_per_hr: float | None = None
    uptime_s: int | None = None
    healthy: bool | None = None
    provision_failures: tuple[str, ...] = field(default_factory=tuple)

    def server(self, *, token: str) -> ServerConfig:
        """The pod as a ComfyUI server for the client (token as a Bearer header)."""
        return ServerConfig(
            url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            name=f"pod {self.pod_id}",
            credential_source=TOKEN_ENV,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pod_id": self.pod_id,
            "name": self.name,
            "status": self.status,
            "url": self.url,
            "gpu": self.gpu,
            "cost_per_hr": self.cost_per_hr,
            "uptime_s": self.uptime_s,
            "healthy": self.healthy,
            "provision_failures": list(self.provision_failures),
        }


def default_manifest_path() -> Path:
    """``$CHARPACK_POD_MANIFEST``, else the checkout's ``runpod/manifest.toml`` (a source tree
    or an editable install), else the copy a wheel ships as ``charpack.recipe``."""
    env = os.environ.get(MANIFEST_ENV, "").strip()
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "runpod" / "manifest.toml"
    if checkout.is_file():
        return checkout
    try:
        return Path(str(resources.files("charpack.recipe") / "manifest.toml"))
    except ModuleNotFoundError:  # neither a checkout nor a wheel with the recipe
        return checkout


def load_pod_spec(
    *,
    manifest_path: Path | None = None,
    name: str = DEFAULT_NAME,
    network_volume_id: str | None = None,
    repo_url: str | None = None,
    repo_ref: str | None = None,
    provision_args: tuple[str, ...] = (),
    civitai_versions: tuple[str, ...] = (),
) -> PodSpec:
    """The pod to create. ``repo_ref`` (default: this client's version, `client_version().ref`)
    is the charpack the pod runs; ``civitai_versions`` holds ``KEY=VERSION_ID`` choices."""
    path = manifest_path or default_manifest_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        pod, layout, repo = raw["pod"], raw["layout"], raw.get("charpack", {})
        entries, chosen = _civitai(raw, civitai_versions)
        return PodSpec(
            name=name,
            image=str(pod["image"]),
            gpu_type=str(pod["gpu_type"]),
            cloud_type=str(pod.get("cloud_type", "SECURE")),
            allowed_cuda_versions=tuple(pod.get("allowed_cuda_versions", ())),
            container_disk_gb=int(pod.get("container_disk_gb", 30)),
            volume_mount=str(pod.get("volume_mount", "/workspace")),
            public_port=int(pod.get("public_port", 8188)),
            repo_dir=str(layout["repo_dir"]),
            repo_url=repo_url or str(repo["repo"]),
            repo_ref=repo_ref or pod_version.client_version().ref,
            network_volume_id=(network_volume_id or os.environ.get(VOLUME_ENV, "")).strip(),
            provision_args=provision_args,
            civitai_entries=entries,
            civitai_versions=chosen,
        )
    except FileNotFoundError:
        raise PodError(
            f"{path} not found: this charpack was installed without its pod recipe; reinstall "
            f"it (pip install charpack, or pip install -e . in a checkout) or set {MANIFEST_ENV} "
            "to a copy of runpod/manifest.toml"
        ) from None
    except (KeyError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise PodError(
            f"{path}: the [pod]/[layout]/[charpack] tables are unusable ({exc})"
        ) from None


def _civitai(
    raw: Mapping[str, Any], given: tuple[str, ...]
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """The manifest's CivitAI entries and the versions chosen for them, options first, then
    ``$CHARPACK_CIVITAI_VERSIONS``, then the manifest's own ``civitai_version``."""
    models = raw.get("models", {})
    entries = {
        str(key): int(m["civitai_model"])
        for key, m in models.items()
        if isinstance(m, dict) and isinstance(m.get("civitai_model"), int)
    }
    chosen = {
        key: int(models[key]["civitai_version"])
        for key in entries
        if isinstance(models[key].get("civitai_version"), int)
    }
    env = [p for p in os.environ.get(CIVITAI_VERSIONS_ENV, "").split(",") if p.strip()]
    for source, items in ((f"${CIVITAI_VERSIONS_ENV}", env), ("--civitai-version", list(given))):
        for item in items:
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not value.isdigit() or int(value) <= 0:
                raise PodError(
                    f"{source} {item.strip()!r}: expected KEY=VERSION_ID with the numeric "
                    "CivitAI version id, e.g. biglove_xl=1744439"
                )
            if key not in entries:
                raise PodError(
                    f"{source} {item.strip()!r}: {key!r} is not a CivitAI entry of "
                    f"runpod/manifest.toml (CivitAI entries: {', '.join(entries) or 'none'})"
                )
            chosen[key] = int(value)
    return tuple(entries.items()), tuple(sorted(chosen.items()))


def comfy_token_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    alias = env.get(POD_TOKEN_ENV, "").strip()
    if token and alias and token != alias:
        raise PodError(f"{TOKEN_ENV} and {POD_TOKEN_ENV} differ; set only {TOKEN_ENV}")
    token = token or alias
    if not TOKEN_RE.match(token):
        what = (
            "is not set"
            if not token
            else "is too short or has characters other than A-Z a-z 0-9 _ -"
        )
        raise PodError(
            f"{TOKEN_ENV} {what}: the pod's ComfyUI only answers requests carrying it. Create "
            "one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'` and "
            f"export {TOKEN_ENV}=<token> (keep it: the pod is created with it)"
        )
    register_secret(token)
    return token
