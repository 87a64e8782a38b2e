"""``charpack run``'s command-line side without servers: which servers it uses, the ``--json``
event lines, the rich display, and the exit codes of a summary."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from charpack.cli.progress import JsonLines, RichProgress
from charpack.cli.run import DEFAULT_SERVER, server_urls
from charpack.run.events import RunEvent
from charpack.run.runner import EXIT_INTERRUPTED, RunSummary


def test_servers_come_from_the_options_then_the_environment_then_the_default() -> None:
    env = {"CHARPACK_SERVER": "https://a-8188.proxy.runpod.net, https://b-8188.proxy.runpod.net"}
    assert server_urls(["http://x:1", "http://x:1", " "], env) == ["http://x:1"]
    assert server_urls(None, env) == [
        "https://a-8188.proxy.runpod.net",
        "https://b-8188.proxy.runpod.net",
    ]
    assert server_urls([], {}) == [DEFAULT_SERVER] == ["http://127.0.0.1:8188"]


RUN = [
    RunEvent(
        "run_started",
        {"pack": "p", "folder": "/f", "jobs": 2, "done": 0, "in_flight": 0, "servers": ["pod a"]},
    ),
    RunEvent("server_up", {"server": "pod a", "version": "0.3.75"}),
    RunEvent("submitted", {"job": "cafe/001", "attempt": 1, "seed": 5, "server": "pod a"}),
    RunEvent("started", {"job": "cafe/001", "server": "pod a"}),
    RunEvent(
        "node", {"job": "cafe/001", "server": "pod a", "node": "base.sampler", "stage": "base"}
    ),
    RunEvent(
        "step",
        {"job": "cafe/001", "server": "pod a", "node": "base.sampler", "value": 3, "max": 30},
    ),
    RunEvent(
        "retry", {"job": "cafe/001", "reason": "identity score 0.300 is below 0.45", "seed": 77}
    ),
    RunEvent("done", {"job": "cafe/001", "score": 0.8, "image": "cafe/x.png", "attempts": 2}),
    RunEvent("failed", {"job": "cafe/002", "error": "node detail.run raised [boom]"}),
    RunEvent("server_down", {"server": "pod a", "reason": "HTTP 524"}),
]


def test_json_mode_writes_one_parseable_object_per_event() -> None:
    out = io.StringIO()
    with JsonLines(out) as sink:
        for event in RUN:
            sink(event)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [e.kind for e in RUN]
    assert lines[5] == {"event": "step", "time": round(RUN[5].at, 3), **RUN[5].data}


def test_the_display_shows_retries_failures_and_outages_as_they_happen() -> None:
    out = io.StringIO()
    with RichProgress(Console(file=out, width=120, force_terminal=False)) as display:
        for event in RUN:
            display(event)
    text = out.getvalue()
    assert "retrying with seed 77" in text
    assert "cafe/002 failed: node detail.run raised [boom]" in text  # markup is escaped
    assert "server pod a is not answering: HTTP 524" in text


def summary(**counts: int) -> RunSummary:
    base = {"pending": 0, "submitted": 0, "done": 0, "below_threshold": 0, "failed": 0}
    return RunSummary(
        pack="p", folder=Path("/f"), jobs=2, counts={**base, **counts}, attempts=2, elapsed_s=1.0
    )


def test_exit_codes_tell_scripts_what_happened() -> None:
    assert summary(done=2).exit_code == 0
    assert summary(done=1, below_threshold=1).exit_code == 0  # every job has its image
    assert summary(done=1, failed=1).exit_code == 1
    assert summary(done=1, pending=1).exit_code == 1
    interrupted = RunSummary(
        pack="p", folder=Path("/f"), jobs=2, counts={}, attempts=0, elapsed_s=1.0, interrupted=True
    )
    assert interrupted.exit_code == EXIT_INTERRUPTED == 130
    no_server = RunSummary(
        pack="p",
        folder=Path("/f"),
        jobs=2,
        counts={"pending": 2},
        attempts=0,
        elapsed_s=1.0,
        error="no server answered",
    )
    assert no_server.exit_code == 3
    assert no_server.to_json()["exit_code"] == 3
