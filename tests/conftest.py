"""Root test configuration: the tiers, the shared ComfyUI test server, server logs on failure.

Tiers (see tests/README.md): ``unit`` needs nothing; ``server`` tests use the ``comfy_server``
fixture (one real ComfyUI 0.3.75 CPU server per session, built and cached on first use) or
``comfy_server_factory`` (private servers a test may kill or restart); ``nodes`` tests run inside
the ComfyUI environment through ``tests/server/test_nodes_tier.py`` and are never collected by the
project's own session; ``gpu`` tests run only against a GPU server named by ``CHARPACK_GPU_URL``.

This file is also loaded by the inner nodes-tier session (inside the ComfyUI venv), so it imports
only the standard library, pytest and the test world's standard-library modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.comfy.install import ComfyEnv, ensure_comfy_env
from tests.comfy.server import ComfyServer, start_server

# The nodes tier needs ComfyUI importable: only the bridge's inner session (which sets this) may
# collect tests/nodes.
INSIDE_NODES_TIER = os.environ.get("CHARPACK_NODES_TIER") == "1"
collect_ignore = [] if INSIDE_NODES_TIER else ["nodes"]

SERVER_FIXTURES = {"comfy_server", "comfy_server_factory", "editor_server"}
_SERVERS = pytest.StashKey[list[ComfyServer]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_url = os.environ.get("CHARPACK_GPU_URL")
    skip_gpu = pytest.mark.skip(reason="gpu tier: set CHARPACK_GPU_URL to a ComfyUI on a GPU")
    for item in items:
        # A test that starts a server is a server-tier test, whether or not it says so.
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if item.get_closest_marker("gpu") and not gpu_url:
            item.add_marker(skip_gpu)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        servers = list(item.stash.get(_SERVERS, []))
        for name in ("comfy_server", "editor_server"):
            shared = getattr(item, "funcargs", {}).get(name)
            if isinstance(shared, ComfyServer):
                servers.insert(0, shared)
        for server in servers:
            report.sections.append(
                (f"ComfyUI log {server.log_path} (last lines)", server.log_tail())
            )
    return report


@pytest.fixture(scope="session")
def comfy_env() -> ComfyEnv:
    """The cached ComfyUI 0.3.75 environment (built on first use; minutes on a fresh machine)."""
    return ensure_comfy_env()


@pytest.fixture(scope="session")
def comfy_server(
    comfy_env: ComfyEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyServer]:
    """The session's shared server: ``.url``, ``.port``, ``.base_dir``, ``.input_dir``,
    ``.output_dir``, ``.models_dir``, ``.log_path``, ``.proc``. Use fresh inputs per test (the
    server caches identical work); never stop or restart it (use ``comfy_server_factory``)."""
    server = start_server(tmp_path_factory.mktemp("comfy-shared"), env=comfy_env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def comfy_server_factory(
    comfy_env: ComfyEnv, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ComfyServer]]:
    """Start private servers: ``make(base_dir=None, port=None, extra_args=(), with_models=True,
    standin_step_seconds=0.0)``. Each is stopped when the test ends; ``server.restart(port=...)``
    or ``make(base_dir=server.base_dir)`` brings one back on the same files."""
    started: list[ComfyServer] = []
    request.node.stash[_SERVERS] = started

    def make(*, base_dir: Path | None = None, **options: Any) -> ComfyServer:
        base = base_dir or tmp_path_factory.mktemp("comfy-private")
        server = start_server(base, env=comfy_env, **options)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def insightface_root() -> Path:
    """The InsightFace root holding the tiny ``buffalo_l`` and ``antelopev2`` packs."""
    given = os.environ.get("CHARPACK_INSIGHTFACE_ROOT")  # set by the nodes-tier bridge
    return Path(given) if given else ensure_comfy_env().insightface_root


@pytest.fixture(scope="session")
def gpu_url() -> str:
    """The GPU ComfyUI the gpu tier talks to (``CHARPACK_GPU_URL``)."""
    return os.environ["CHARPACK_GPU_URL"]
