"""Which charpack this is, and whether a server's charpack nodes are the same one.

Owns `CharpackVersion` (a release version plus, when known, the git commit), how the client
knows its own (`client_version`), the git ref a pod checks out to match it (`CharpackVersion.ref`)
and reading a server's (``GET /charpack/version``, served by the node pack inside ComfyUI).

The scheme (runpod/README.md "Versions"): the version is ``charpack_nodes.__version__`` (equal
to pyproject's, which ``importlib.metadata`` reports once installed). The commit is the one pip
recorded for a ``pip install git+…@<commit>`` (``direct_url.json``), else the HEAD of the
checkout the client runs from (an editable install), else unknown (a release from an index).
A pod checks out that commit, or the release tag ``v<version>`` when there is none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import charpack_nodes

from ..comfy.client import ComfyClient
from ..errors import ServerUnavailable

VERSION_ROUTE = "/charpack/version"
REPO_URL = "https://github.com/charpack/charpack"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class CharpackVersion:
    version: str
    commit: str | None = None

    @property
    def ref(self) -> str:
        """The git ref a pod checks out to run exactly this version."""
        return self.commit or f"v{self.version}"

    def matches(self, other: CharpackVersion) -> bool:
        """Same release, and the same commit when both know theirs."""
        if self.version != other.version:
            return False
        return self.commit is None or other.commit is None or self.commit == other.commit

    def __str__(self) -> str:
        return f"{self.version} (commit {self.commit[:12]})" if self.commit else self.version


@lru_cache(maxsize=1)
def client_version() -> CharpackVersion:
    """This client's charpack (measured once per process)."""
    return CharpackVersion(charpack_nodes.__version__, _installed_commit() or _checkout_commit())


def _installed_commit() -> str | None:
    """The commit pip recorded for an install from git (PEP 610 direct_url.json)."""
    try:
        text = metadata.distribution("charpack").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return None
    commit = str((data.get("vcs_info") or {}).get("commit_id", ""))
    return commit if _COMMIT_RE.match(commit) else None


def _checkout_commit() -> str | None:
    # The folder holding orchestrator/: a charpack checkout for an editable install (or a run
    # from the source tree); site-packages otherwise, which is no checkout.
    return charpack_nodes.checkout_commit(Path(__file__).resolve().parents[2])


def parse_version(data: Any) -> CharpackVersion | None:
    """A ``/charpack/version`` answer as a version (None when it is not one)."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        return None
    commit = data.get("commit")
    return CharpackVersion(
        str(data["version"]),
        commit if isinstance(commit, str) and _COMMIT_RE.match(commit) else None,
    )


def server_version(client: ComfyClient) -> CharpackVersion | None:
    """The charpack nodes' version the server behind ``client`` runs; None when it does not
    say (nodes older than the route, or not loaded). Raises `ServerUnavailable`/`AuthError`
    like every other read."""
    response = client.http.request("GET", VERSION_ROUTE, what=f"GET {VERSION_ROUTE}", ok=(200, 404))
    if response.status_code == 404:
        response.close()
        return None
    try:
        return parse_version(client.http.json(response, f"GET {VERSION_ROUTE}"))
    except ServerUnavailable:
        return None


def mismatch_message(server: CharpackVersion | None, client: CharpackVersion) -> tuple[str, str]:
    """(problem, fix) for a server whose charpack nodes are not ``client``'s."""
    running = str(server) if server else "that do not report their version (older than this check)"
    problem = f"server runs charpack nodes {running}, this client is {client}"
    fix = f"update the pod (charpack pod up re-provisions at {client})"
    if server is None:
        return problem, fix + " or update the server's charpack nodes"
    install = f"install charpack=={server.version}"
    if server.commit and server.version == client.version:
        install += f" at commit {server.commit} (pip install 'git+{REPO_URL}@{server.commit}')"
    return problem, f"{fix} or {install}"


__all__ = [
    "VERSION_ROUTE",
    "CharpackVersion",
    "client_version",
    "mismatch_message",
    "parse_version",
    "server_version",
]
