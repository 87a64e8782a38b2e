"""The pack folder holds up: one run at a time, a full disk, stale temp files, changed reference
files and planted symbolic links — each with real ``charpack run`` processes against the real
CPU ComfyUI, real files and a real tmpfs.

Runs act on the events the command prints (``--json``), never on time.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from charpack.cli.main import app
from charpack.comfy.auth import ServerConfig
from charpack.pack.packfile import load_pack
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import check_folder, history_ids, manifest, options, write_pack
from tests.server.test_run_process import (
    QUICK,
    Cli,
    five_jobs,
    ran_once_each,
    server_queue,
    wait_until,
)
from tests.support.tmpfs import fill, tmpfs

pytestmark = pytest.mark.server


def error_of(cli: Cli) -> str:
    errors = [e["error"]["message"] for e in cli.events if e["event"] == "error"]
    assert errors, f"no error event: {cli.kinds()} {cli.stderr()}"
    return str(errors[0])


def temp_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob(".*")
        if p.name.endswith((".tmp", ".part"))
    )


def prompts_of(data: dict[str, object]) -> list[str]:
    jobs = data["jobs"]
    assert isinstance(jobs, dict)
    return [a["prompt_id"] for j in jobs.values() for a in j["attempts"]]


def test_a_second_run_on_a_folder_is_refused_at_once_and_a_killed_runs_lock_is_taken_over(
    slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path, pack = five_jobs(tmp_path / "src")
    out = tmp_path / "pack"
    first = Cli(path, slow_server.url, out)
    cli_runs.append(first)
    first.wait_for("run_started")

    second = Cli(path, slow_server.url, out)
    cli_runs.append(second)
    assert second.finish() == 2
    message = error_of(second)
    assert f"pid {first.proc.pid}" in message and "is in use by another charpack run" in message
    assert "--out with another folder" in message
    assert "submitted" not in second.kinds()  # it posted nothing

    # The read-only tools work on the folder while the run holds it.
    first.wait_for("done")
    runner = CliRunner()
    for args in (["report", str(out)], ["contact-sheet", str(out)], ["publish", str(out)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)

    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(30) == -signal.SIGKILL
    # What a run killed mid-write leaves: its manifest's and a download's temp files.
    left = [
        out / f".manifest.json.{first.proc.pid}.tmp",
        out / "pier" / ".pier_005_1.png.0badcafe.part",
    ]
    for temp in left:
        temp.write_bytes(b"half written")
    keep = out / "pier" / "my-notes.part"
    keep.write_text("not charpack's")
    wait_until(lambda: not server_queue(slow_server.url))

    third = Cli(path, slow_server.url, out)
    cli_runs.append(third)
    assert third.finish() == 0, third.stderr()
    (taken,) = [e for e in third.events if e["event"] == "lock_taken_over"]
    assert taken["holder"]["pid"] == first.proc.pid
    (removed,) = [e for e in third.events if e["event"] == "temp_files_removed"]
    assert sorted(removed["files"]) == sorted(p.relative_to(out).as_posix() for p in left)
    assert keep.exists() and temp_files(out) == []
    assert not (out / ".charpack.lock").exists()  # released at the end

    data = check_folder(out, pack)
    history = history_ids(slow_server.url)
    ran_once_each(data, history)
    # The server ran exactly the prompts the pack folder records, no more (56 for 32 before).
    recorded = prompts_of(data)
    assert set(recorded) <= history and len(recorded) == len(set(recorded)) == 5


@pytest.mark.parametrize("when", ["mid-run", "first-save"])
def test_a_full_disk_stops_the_run_with_what_to_free_and_nothing_is_generated_again(
    when: str, slow_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    """``mid-run``: the disk fills after the first image, so the next download finds it full;
    ``first-save``: there is room for the lock and the first manifest only, so recording the
    first attempt (before its prompt is posted) finds it full."""
    path, pack = five_jobs(tmp_path / "src")
    with tmpfs(tmp_path / "disk", size_mb=96) as disk:
        out = disk / "pack"
        filler = disk / "filler"
        if when == "first-save":
            os.truncate(filler, fill(filler) - 3 * 4096)  # three pages left
        cli = Cli(path, slow_server.url, out)
        cli_runs.append(cli)
        if when == "mid-run":
            cli.wait_for("done")
            fill(filler)
        assert cli.finish() == 2
        message = error_of(cli)
        assert message.startswith(f"no space left on {disk} — free ") and " MB " in message
        assert "run the same command again" in message
        assert "Traceback" not in cli.stderr()
        if when == "first-save":
            assert "submitted" not in cli.kinds()  # nothing was posted

        data = manifest(out)  # still valid JSON
        assert "retry" not in cli.kinds() and "requeued" not in cli.kinds()
        for key, job in data["jobs"].items():
            assert len(job["attempts"]) <= 1, key
            assert all(a["status"] in ("success", "submitted") for a in job["attempts"]), key
        assert temp_files(out) == []
        wait_until(lambda: not server_queue(slow_server.url))
        history = history_ids(slow_server.url)
        ran = [p for p in prompts_of(data) if p in history]
        assert len(ran) == len(set(ran))

        filler.unlink()  # space freed: the same folder resumes
        config = ServerConfig.from_url(slow_server.url, env={})
        summary = run_pack(pack, servers=[config], options=options(out))
        assert summary.exit_code == 0 and summary.counts["done"] == 5
        resumed = check_folder(out, pack)
        ran_once_each(resumed, history_ids(slow_server.url))
        for key, job in data["jobs"].items():  # what ran before the disk filled was kept
            if job["attempts"]:
                first = job["attempts"][0]["prompt_id"]
                assert resumed["jobs"][key]["attempts"][0]["prompt_id"] == first
                assert len(resumed["jobs"][key]["attempts"]) == 1
        assert temp_files(out) == []


def test_a_face_reference_replaced_under_its_name_is_refused_on_resume_naming_the_file(
    comfy_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path = write_pack(
        tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": 1}], stages=QUICK
    )
    pack = load_pack(path)
    out = tmp_path / "pack"
    config = ServerConfig.from_url(comfy_server.url, env={})
    assert run_pack(pack, servers=[config], options=options(out)).exit_code == 0
    before = manifest(out)

    (face,) = pack.face_references
    original = face.read_bytes()
    with Image.open(face) as img:
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(face)  # another face, same name
    history = history_ids(comfy_server.url)
    cli = Cli(path, comfy_server.url, out)
    cli_runs.append(cli)
    assert cli.finish() == 2
    message = error_of(cli)
    assert f"faces/{face.name}" in message and "Put the old file back" in message
    assert "--out with a new folder" in message
    assert history_ids(comfy_server.url) == history  # nothing was posted
    assert manifest(out) == before

    face.write_bytes(original)  # the old file back: it resumes, with nothing to do
    cli = Cli(path, comfy_server.url, out)
    cli_runs.append(cli)
    assert cli.finish() == 0, cli.stderr()
    assert prompts_of(manifest(out)) == prompts_of(before)


@pytest.mark.parametrize("planted", ["desk", "manifest.json", "rejected"])
def test_a_symlink_planted_in_the_pack_folder_is_refused_and_nothing_is_written_through_it(
    planted: str, comfy_server: ComfyServer, cli_runs: list[Cli], tmp_path: Path
) -> None:
    path = write_pack(
        tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": 1}], stages=QUICK
    )
    out = tmp_path / "pack"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere if planted != "manifest.json" else elsewhere / "x.json"
    (out / planted).symlink_to(target)
    history = history_ids(comfy_server.url)

    cli = Cli(path, comfy_server.url, out)
    cli_runs.append(cli)
    assert cli.finish() == 2
    message = error_of(cli)
    assert f"{out / planted} is a symbolic link" in message and "Remove the link" in message
    assert list(elsewhere.iterdir()) == []  # nothing written outside the pack folder
    assert sorted(p.name for p in out.iterdir()) == [planted]
    assert history_ids(comfy_server.url) == history  # refused before any GPU time
    assert json.dumps(cli.events).count("submitted") == 0
