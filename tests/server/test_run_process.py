"""``charpack run`` as a real process: killed with SIGKILL and resumed, stopped with one Ctrl-C,
and with two.

The command runs with ``--json`` and the test reads its event lines as they come, acting on
them (never on time): after the first finished image it kills or interrupts the process, then
checks the pack folder, the server's queue and history, and resumes the run in-process.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from charpack.comfy.auth import ServerConfig
from charpack.pack.packfile import Pack, load_pack
from charpack.run.runner import EXIT_INTERRUPTED, run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import check_folder, history_ids, manifest, options, write_pack
from tests.support.commands import CHARPACK, JsonLines
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 240.0
QUICK = {"face_detailer": {"steps": 2}, "instantid": {"steps": 2}}


class Cli:
    """``charpack run ... --json`` with its events read on a thread."""

    def __init__(self, pack: Path, server: str, out: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
        self.proc = subprocess.Popen(
            [
                *CHARPACK,
                "run",
                str(pack),
                "--server",
                server,
                "--out",
                str(out),
                "--json",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lines = JsonLines(self.proc)

    def wait_for(self, kind: str, *, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The next event of ``kind`` (events before it are kept in ``self.events``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind!r} event within {timeout} s") from None
            if event is None:
                raise AssertionError(f"the run ended before a {kind!r} event: {self.stderr()}")
            self.events.append(event)
            if event["event"] == kind:
                return event

    def finish(self, timeout: float = DEADLINE_S) -> int:
        rc = self.proc.wait(timeout)
        while (event := self._lines.get(timeout=timeout)) is not None:
            self.events.append(event)
        return rc

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    def close(self) -> None:
        """Kill the process if a failed test left it running; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._lines.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def five_jobs(folder: Path) -> tuple[Path, Pack]:
    path = write_pack(folder, [{"name": "pier", "prompt": "on a pier", "count": 5}], stages=QUICK)
    return path, load_pack(path)


def server_queue(url: str) -> set[str]:
    body = requests.get(f"{url}/queue", timeout=30).json()
    return {item[1] for item in body["queue_running"] + body["queue_pending"]}


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)  # polling interval of the condition, not a wait for an effect


def ran_once_each(data: dict[str, Any], history: set[str]) -> None:
    """Every job ran exactly once on the server (history keeps every prompt it ran)."""
    for key, job in data["jobs"].items():
        ran = [a["prompt_id"] for a in job["attempts"] if a["prompt_id"] in history]
        assert len(ran) == 1, f"{key} ran {len(ran)} times"


def test_a_killed_client_resumes_collecting_what_finished_meanwhile_and_runs_nothing_twice(
    slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path, pack = five_jobs(tmp_path / "src")
    out = tmp_path / "pack"
    cli = Cli(path, slow_server.url, out)
    cli_runs.append(cli)
    cli.wait_for("done")
    cli.proc.send_signal(signal.SIGKILL)
    assert cli.proc.wait(30) == -signal.SIGKILL

    left = {
        k: j["prompt_id"] for k, j in manifest(out)["jobs"].items() if j["status"] == "submitted"
    }
    assert left, "some prompts should still have been on the server"
    wait_until(lambda: not server_queue(slow_server.url))  # they finish while nobody watches

    config = ServerConfig.from_url(slow_server.url, env={})
    summary = run_pack(pack, servers=[config], options=options(out))
    assert summary.exit_code == 0 and summary.counts["done"] == 5
    data = check_folder(out, pack)
    history = history_ids(slow_server.url)
    ran_once_each(data, history)
    for key, prompt_id in left.items():
        if prompt_id in history:  # posted before the kill: downloaded now, never re-run
            accepted = [a for a in data["jobs"][key]["attempts"] if a["status"] == "success"]
            assert accepted[0]["prompt_id"] == prompt_id


def test_one_ctrl_c_finishes_downloads_saves_and_leaves_queued_prompts_for_the_next_run(
    slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path, pack = five_jobs(tmp_path / "src")
    out = tmp_path / "pack"
    cli = Cli(path, slow_server.url, out)
    cli_runs.append(cli)
    cli.wait_for("done")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.finish() == EXIT_INTERRUPTED
    kinds = cli.kinds()
    assert "stopping" in kinds and "cancelling" not in kinds
    assert cli.events[-1]["event"] == "finished" and cli.events[-1]["interrupted"] is True
    assert "contact_sheet" not in kinds

    data = check_folder(out, pack)
    left = {k: j["prompt_id"] for k, j in data["jobs"].items() if j["status"] == "submitted"}
    assert left
    on_server = server_queue(slow_server.url) | history_ids(slow_server.url)
    assert set(left.values()) <= on_server  # not cancelled: they keep running

    config = ServerConfig.from_url(slow_server.url, env={})
    summary = run_pack(pack, servers=[config], options=options(out))
    assert summary.exit_code == 0 and summary.counts["done"] == 5
    data = check_folder(out, pack)
    ran_once_each(data, history_ids(slow_server.url))
    for key, prompt_id in left.items():
        assert [a["prompt_id"] for a in data["jobs"][key]["attempts"]] == [prompt_id]


def test_a_second_ctrl_c_also_cancels_this_runs_prompts_on_the_server(
    slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path, pack = five_jobs(tmp_path / "src")
    out = tmp_path / "pack"
    with TcpRelay(target_port=slow_server.port) as relay:
        cli = Cli(path, relay.url, out)
        cli_runs.append(cli)
        cli.wait_for("done")
        relay.rate = 40_000  # bytes/s: the next image takes seconds to come down
        downloading = cli.wait_for("downloading")
        cli.proc.send_signal(signal.SIGINT)
        cli.wait_for("stopping")
        cli.proc.send_signal(signal.SIGINT)
        cli.wait_for("cancelling")
        assert cli.finish() == EXIT_INTERRUPTED

    cancelled = [e["job"] for e in cli.events if e["event"] == "cancelled"]
    assert cancelled
    data = check_folder(out, pack)
    jobs = data["jobs"]
    # The image takes ~4 s at this rate, longer than the grace after Ctrl-C: the download is
    # dropped within seconds and its attempt left for the next run, never lost or re-run.
    slow = jobs[downloading["job"]]
    assert slow["status"] == "submitted", slow
    assert slow["attempts"][-1]["prompt_id"] in history_ids(slow_server.url)
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    ids = {a["prompt_id"] for j in jobs.values() for a in j["attempts"]}
    assert not ids & server_queue(slow_server.url)  # nothing of this run is left queued
    for key in cancelled:
        attempt = jobs[key]["attempts"][-1]
        assert jobs[key]["status"] == "pending" and attempt["status"] == "interrupted"
        entry = requests.get(f"{slow_server.url}/history/{attempt['prompt_id']}", timeout=30)
        # Deleted from the queue (never ran) or interrupted while running: no image either way.
        ran = entry.json().get(attempt["prompt_id"])
        assert ran is None or ran["status"]["status_str"] == "error"
