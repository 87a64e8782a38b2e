"""Fixtures the server-tier run tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.comfy.server import ComfyServer

if TYPE_CHECKING:
    from tests.server.test_run_process import Cli


@pytest.fixture
def slow_server(comfy_server_factory: Callable[..., ComfyServer]) -> ComfyServer:
    """A private server whose stand-ins take 0.25 s a step: a run is still going when a test
    acts on its events (Ctrl-C, SIGKILL, a second run)."""
    return comfy_server_factory(standin_step_seconds=0.25)


@pytest.fixture
def cli_runs() -> Iterator[list[Cli]]:
    """The ``charpack run`` processes a test starts; killed at the end if still running."""
    runs: list[Cli] = []
    yield runs
    for cli in runs:  # a failed test must not leave a run behind
        cli.close()
