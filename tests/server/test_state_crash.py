"""A pack state killed at any instant still loads, holds every save that returned, and resumes.

Two kinds of writer, both real processes killed with SIGKILL:

- a process recording attempts through :class:`charpack.run.state.PackState` (a big pack's
  saves going to ``manifest.journal``), killed inside a save at each instant that matters: half
  a journal line written, a line written but not fsynced, half of ``manifest.json``'s temp file
  written, and after the rename with the superseded journal still there; and killed from outside
  at whatever instant it has reached. The folder loads with exactly the saves that returned
  (plus the one in progress, when its bytes were all written), and a resumed state finishes
  every job once;
- ``charpack run`` itself against the real CPU ComfyUI, journaling every save, killed after its
  first finished image: the folder loads with that image recorded (it is in the journal only),
  and the next run collects the rest, runs nothing twice and leaves one plain manifest.json;
  a journaling run that ends leaves one plain manifest.json too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.folder.journal import JOURNAL
from charpack.folder.manifest import FileRecord, Manifest
from charpack.pack.packfile import load_pack
from charpack.run.retry_rules import Ending
from charpack.run.runner import run_pack
from charpack.run.state import PackState
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import check_folder, history_ids, manifest, options, write_pack
from tests.server.test_run_process import CHARPACK, QUICK, REPO, Cli, five_jobs, ran_once_each
from tests.support.commands import JsonLines

pytestmark = pytest.mark.server

JOBS = 30
WORKFLOW = {f"n{i}.x": {"class_type": "KSampler", "inputs": {"seed": i, "t": "w" * 60}}
            for i in range(50)}  # fmt: skip

# The writer: one save per step (the first: every job pending; then for each job its begin,
# then its end), printing "saved N" (N = steps on disk) after each save returns. CRASH names
# where it kills itself: "<point>:<n>", at the n-th time it reaches that point.
WRITER = r"""
import os, signal, sys
from pathlib import Path
from charpack.folder import journal, manifest
from charpack.pack.packfile import load_pack
from charpack.run.retry_rules import Ending
from charpack.run.state import PackState

point, _, nth = os.environ.get("CRASH", "none:0").partition(":")
seen = {"n": 0}

def due():
    seen["n"] += 1
    return seen["n"] == int(nth)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_append, real_remove, real_atomic = (
    journal.JournalWriter.append, journal.JournalWriter.remove, manifest.atomic_write)

def append(self, record):
    if point in ("torn_line", "unsynced_line") and due():
        data = record.encode() + b"\n"
        os.write(self._fd, data[: len(data) // 2] if point == "torn_line" else data)
        die()
    real_append(self, record)

def remove(self):
    if point == "journal_left" and due():
        die()
    real_remove(self)

def atomic_write(path, write, **kw):
    if point == "torn_snapshot" and due():
        def half(fh):
            class Half:
                def write(self, data):
                    fh.write(data[: len(data) // 2]); fh.flush(); die()
            write(Half())
        return real_atomic(path, half, **kw)
    return real_atomic(path, write, **kw)

journal.JournalWriter.append, journal.JournalWriter.remove = append, remove
manifest.atomic_write = atomic_write

pack = load_pack(Path(sys.argv[1]))
state = PackState.open(Path(sys.argv[2]), pack, max_retries=1)
workflow = {WORKFLOW}
steps = 0
def saved():
    print("saved", steps, flush=True)
state.save(); saved()
for key in list(state.jobs):
    pid = state.begin(key, server="http://gone:8188", version="0.3.75", seed=1, workflow=workflow)
    steps += 1; saved()
    files = [{"path": f"{key}.png", "sha256": "0" * 64, "bytes": 1}]
    state.end(key, pid, Ending("success", score=0.9, files=files))
    state.flush(); steps += 1; saved()
print("finished", flush=True)
""".replace("{WORKFLOW}", repr(WORKFLOW))


def writer(pack: Path, out: Path, crash: str) -> tuple[int, list[int]]:
    """Run the writer until it dies (or finishes); its exit code and the saves it reported."""
    env = {**os.environ, "CRASH": crash, "CHARPACK_STATE_SNAPSHOT_MAX": "0"}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(pack), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    acked = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("saved")]
    assert acked, done.stderr
    return done.returncode, acked


def steps_on_disk(folder: Path, count: int = JOBS) -> int:
    """Saves the folder holds: one per attempt begun, one per attempt ended."""
    jobs = list(Manifest.load(folder))
    assert len(jobs) == count
    return sum(len(j.get("attempts") or []) + (j.get("status") == "done") for j in jobs)


def finish_the_pack(pack_file: Path, out: Path) -> dict[str, Any]:
    """Resume as a run does: in-flight attempts come back, waiting jobs get one attempt each."""
    pack = load_pack(pack_file)
    state = PackState.open(out, pack, max_retries=1)
    for key, attempt in list(state.in_flight()):
        files: list[FileRecord] = [{"path": f"{key}.png", "sha256": "1" * 64, "bytes": 1}]
        state.end(key, attempt["prompt_id"], Ending("success", score=0.9, files=files))
    state.save()
    for key in state.todo():
        pid = state.begin(key, server="http://s", version=None, seed=2, workflow=WORKFLOW)
        state.end(key, pid, Ending("success", score=0.9, files=[]))
        state.flush()
    state.close()
    return manifest(out)


# (crash point, the n-th time, saves on disk beyond those reported)
CRASHES = [
    ("torn_line", 1, 0),  # the first journaled save, half written
    ("torn_line", 9, 0),
    ("unsynced_line", 5, 1),  # all its bytes written: the kernel keeps them
    ("torn_snapshot", 2, 0),  # manifest.json rewritten as the journal grew past its bound
    ("journal_left", 1, 1),  # manifest.json renamed in place, superseded journal not removed
]


@pytest.mark.parametrize(
    ("point", "nth", "extra"), CRASHES, ids=[f"{p}-{n}" for p, n, _ in CRASHES]
)
def test_a_writer_killed_inside_a_save_leaves_every_save_that_returned_and_resumes(
    point: str, nth: int, extra: int, tmp_path: Path
) -> None:
    pack = write_pack(tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": JOBS}])
    out = tmp_path / "pack"
    code, acked = writer(pack, out, f"{point}:{nth}")
    assert code == -signal.SIGKILL
    assert steps_on_disk(out) == acked[-1] + extra
    data = finish_the_pack(pack, out)
    assert not (out / JOURNAL).exists()  # one plain manifest.json again
    for key, job in data["jobs"].items():
        assert job["status"] == "done", key
        assert [a["status"] for a in job["attempts"]] == ["success"], key  # once each


def test_a_writer_killed_from_outside_at_any_instant_loads_and_resumes(tmp_path: Path) -> None:
    # Thousands of saves to go when the kill is sent: it lands inside one of them.
    jobs = 2_000
    pack = write_pack(tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": jobs}])
    out = tmp_path / "pack"
    env = {**os.environ, "CHARPACK_STATE_SNAPSHOT_MAX": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(pack), str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:  # kill it mid-way, wherever in its next save it is
        acked.append(int(line.split()[1]))
        if len(acked) == JOBS:
            proc.send_signal(signal.SIGKILL)
            break
    acked += [int(line.split()[1]) for line in proc.stdout if line.startswith("saved")]
    assert proc.wait(30) == -signal.SIGKILL
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    assert steps_on_disk(out, jobs) - acked[-1] in (0, 1)  # the saves that returned (+ one)
    data = finish_the_pack(pack, out)
    assert all([a["status"] for a in j["attempts"]] == ["success"] for j in data["jobs"].values())


class JournalingCli(Cli):
    """``charpack run --json`` with every save after its first journaled (a big pack's way)."""

    def __init__(self, pack: Path, server: str, out: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
        env["CHARPACK_STATE_SNAPSHOT_MAX"] = "0"
        self.proc = subprocess.Popen(
            [*CHARPACK, "run", str(pack), "--server", server, "--out", str(out), "--json"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self._lines = JsonLines(self.proc)


def test_a_killed_journaling_run_keeps_its_finished_image_and_the_next_run_completes_the_pack(
    slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path, pack = five_jobs(tmp_path / "src")
    out = tmp_path / "pack"
    cli = JournalingCli(path, slow_server.url, out)
    cli_runs.append(cli)
    finished = cli.wait_for("done")
    cli.proc.send_signal(signal.SIGKILL)
    assert cli.proc.wait(30) == -signal.SIGKILL

    assert (out / JOURNAL).exists()
    plain = manifest(out)["jobs"]  # the run's first save: every job pending ...
    assert not [a for j in plain.values() for a in j["attempts"]]
    loaded = Manifest.load(out)  # ... the journal holds every attempt it posted since
    posted = [a["prompt_id"] for a in loaded.job(finished["job"])["attempts"]]
    assert posted and loaded.job(finished["job"])["status"] in ("submitted", "done")

    config = ServerConfig.from_url(slow_server.url, env={})
    summary = run_pack(pack, servers=[config], options=options(out))
    assert summary.exit_code == 0 and summary.counts["done"] == 5
    assert not (out / JOURNAL).exists()
    data = check_folder(out, pack)
    ran_once_each(data, history_ids(slow_server.url))
    # Its image was made before the kill: collected (or kept), never generated again.
    assert [a["prompt_id"] for a in data["jobs"][finished["job"]]["attempts"]] == posted


def test_a_journaling_run_that_ends_leaves_one_plain_manifest_json(
    comfy_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path = write_pack(
        tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": 2}], stages=QUICK
    )
    out = tmp_path / "pack"
    cli = JournalingCli(path, comfy_server.url, out)
    cli_runs.append(cli)
    assert cli.finish() == 0, cli.stderr()
    assert not (out / JOURNAL).exists()  # folded in when the run ended
    data = check_folder(out, load_pack(path))
    assert [j["status"] for j in data["jobs"].values()] == ["done", "done"]
