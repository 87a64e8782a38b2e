"""Downloads from a server that answers like ComfyUI but is hostile (tests/support/hostile_comfy).

What lands in the pack folder is decided by the job: a stream that never ends is cut at what the
job can produce, a server that goes quiet is refused after the idle timeout, Ctrl-C stops any
download, stalled or trickling forever, within about two seconds (a cancel event: at once),
names with NUL, other suffixes,
thousands of outputs, another prompt's sidecar or a file that is not the one its sidecar
describes are refused, and every refusal ends only that attempt (the job runs again; no thread
dies, no ``.part`` stays). A symlinked folder in the pack folder is never written through, and a
full disk (a real small tmpfs) says how much to free and stops the run.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.limits import DownloadCancelled, Limits
from charpack.comfy.results import OutputRef
from charpack.errors import DiskFull, OutputRefused, PackFolderError
from charpack.pack.jobs import Job, expand
from charpack.pack.packfile import Pack, load_pack
from charpack.run.events import RunEvent
from charpack.run.options import RunControl
from charpack.run.runner import RunSummary, run_pack
from tests.server.test_run_pack import manifest, options, write_pack
from tests.support.hostile_comfy import HostileComfy, endless, png_bytes, trickle

RUN_LIMIT_S = 60.0  # every run here ends in seconds; this bounds a hang, it times nothing


def one_job_pack(tmp_path: Path) -> tuple[Pack, Job]:
    pack = load_pack(write_pack(tmp_path / "src", [{"name": "cafe", "prompt": "cafe", "count": 1}]))
    (job,) = expand(pack)
    return pack, job


def run(
    pack: Pack, server: HostileComfy, out: Path, control: RunControl | None = None, **changes: Any
) -> tuple[RunSummary, list[RunEvent]]:
    """``run_pack`` on a thread, bounded: a hang fails the test instead of stalling it."""
    events: list[RunEvent] = []
    config = ServerConfig.from_url(server.url, env={})
    opts = options(out, events, contact_sheet=False, control=control, **changes)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["summary"] = run_pack(pack, servers=[config], options=opts)
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RUN_LIMIT_S)
    assert not thread.is_alive(), f"the run hung; events: {[e.kind for e in events][-12:]}"
    if "error" in box:
        raise box["error"]
    return box["summary"], events


def files_in(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", ".charpack.lock")
    )


def parts_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def attempt_errors(out: Path) -> list[str]:
    data = manifest(out)
    return [str(a.get("error")) for j in data["jobs"].values() for a in j["attempts"]]


def refused_run(pack: Pack, server: HostileComfy, out: Path, **changes: Any) -> list[str]:
    """Run a pack whose every attempt is refused: the job fails after its retries, nothing but
    the manifest is kept, and the attempts' errors are returned."""
    summary, _events = run(pack, server, out, **changes)
    assert summary.counts["failed"] == 1, summary
    assert len(server.prompts) > 1, "a refused attempt is run again (a new prompt each time)"
    assert files_in(out) == [] and parts_in(out) == []
    (entry,) = manifest(out)["jobs"].values()
    assert "refused" in entry["error"], entry["error"]  # said as it is, not "server restarted"
    return attempt_errors(out)


# -- the honest case ----------------------------------------------------------------------------


def test_a_saver_like_server_gives_the_job_its_own_image_and_sidecar(tmp_path: Path) -> None:
    pack, job = one_job_pack(tmp_path)
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem))
    with server:
        summary, _events = run(pack, server, tmp_path / "out")
    assert summary.exit_code == 0 and summary.counts["done"] == 1
    assert files_in(tmp_path / "out") == [f"cafe/{job.stem}.json", f"cafe/{job.stem}.png"]
    assert (tmp_path / "out" / "cafe" / f"{job.stem}.png").read_bytes() == png_bytes()


# -- size, time, Ctrl-C -------------------------------------------------------------------------


def test_an_endless_stream_is_cut_at_the_cap_and_leaves_nothing(tmp_path: Path) -> None:
    server = HostileComfy(outputs=lambda pid: {})
    server.view = endless(server)
    ref = OutputRef("a.png", "p/s", "output", "save.run")
    with server, ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
        with pytest.raises(OutputRefused, match="more than what this job can produce"):
            client.download(ref, tmp_path / "a.png", limits=Limits(max_bytes=8 << 20))
    assert list(tmp_path.iterdir()) == []


def test_an_endless_stream_in_a_run_is_refused_attempt_by_attempt(tmp_path: Path) -> None:
    pack, job = one_job_pack(tmp_path)
    server = HostileComfy(outputs=lambda pid: server.saver_outputs(pid, f"{pack.name}/cafe", "x"))
    server.view = endless(server)
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("more than what this job can produce" in e for e in errors), errors


def test_a_server_that_sends_a_byte_now_and_then_is_refused_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    pack, job = one_job_pack(tmp_path)
    server = HostileComfy(outputs=lambda pid: server.saver_outputs(pid, f"{pack.name}/cafe", "x"))
    server.view = trickle(server, every_s=20.0)
    with server:
        errors = refused_run(pack, server, tmp_path / "out", download_idle_s=0.5)
    assert any("no byte came for" in e for e in errors), errors


def test_a_download_slower_than_its_deadline_is_refused(tmp_path: Path) -> None:
    server = HostileComfy(outputs=lambda pid: {})
    server.view = trickle(server, every_s=0.05)  # never idle, never done
    ref = OutputRef("a.png", "p/s", "output", "save.run")
    with server, ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
        with pytest.raises(OutputRefused, match="took longer than"):
            client.download(ref, tmp_path / "a.png", limits=Limits(idle_s=5, deadline_s=0.5))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("every_s", [20.0, 0.05], ids=["stalled", "never-ending-trickle"])
def test_ctrl_c_stops_a_download_within_seconds_and_the_next_run_gets_the_image(
    tmp_path: Path, every_s: float
) -> None:
    pack, job = one_job_pack(tmp_path)
    out = tmp_path / "out"
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem))
    honest = server.view
    server.view = trickle(server, every_s=every_s)  # stalled, or bytes forever but never idle
    control = RunControl()
    downloading = threading.Event()

    def interrupt_when_downloading(event: RunEvent) -> None:
        if event.kind == "downloading" and not downloading.is_set():
            downloading.set()
            threading.Thread(target=control.interrupt, daemon=True).start()

    with server:
        config = ServerConfig.from_url(server.url, env={})
        opts = options(
            out, None, contact_sheet=False, control=control, download_idle_s=600.0,
            on_event=interrupt_when_downloading,
        )  # fmt: skip
        started = time.monotonic()
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: box.update(s=run_pack(pack, servers=[config], options=opts)),
            daemon=True,
        )
        thread.start()
        thread.join(RUN_LIMIT_S)  # the idle timeout (600 s) is not what ends it
        assert not thread.is_alive(), "Ctrl-C did not stop the download"
        stopped_s = time.monotonic() - started
        summary = box["s"]
        assert summary.interrupted and downloading.is_set()
        assert parts_in(out) == [] and files_in(out) == []
        (entry,) = manifest(out)["jobs"].values()
        assert entry["status"] == "submitted"  # left for the next run, not lost
        print(f"run stopped {stopped_s:.2f} s after it started (Ctrl-C during a download)")  # noqa: T201
        server.view = honest
        again, _events = run(pack, server, out)
    assert again.counts["done"] == 1 and len(server.prompts) == 1  # downloaded, not re-run


def test_a_cancel_event_stops_the_download_function_too(tmp_path: Path) -> None:
    server = HostileComfy(outputs=lambda pid: {})
    server.view = trickle(server, every_s=20.0)
    cancel = threading.Event()
    ref = OutputRef("a.png", "p/s", "output", "save.run")
    timer = threading.Timer(0.3, cancel.set)
    with server, ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
        timer.start()
        with pytest.raises(DownloadCancelled):
            client.download(ref, tmp_path / "a.png", cancel=cancel, limits=Limits(idle_s=600))
    assert list(tmp_path.iterdir()) == []


# -- names, suffixes, counts, provenance -------------------------------------------------------


def image_only(subfolder: str, *names: str) -> dict[str, Any]:
    images = [{"filename": n, "subfolder": subfolder, "type": "output"} for n in names]
    return {"save.run": {"images": images}, "score.run": {"scores": [0.9]}}


def test_a_nul_in_a_reported_name_ends_the_attempt_not_the_download_thread(
    tmp_path: Path,
) -> None:
    pack, _job = one_job_pack(tmp_path)
    server = HostileComfy(outputs=lambda pid: image_only(f"{pack.name}/cafe", "a\x00b.png"))
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("control characters (U+0000)" in e for e in errors), errors


def test_the_server_never_chooses_the_suffix(tmp_path: Path) -> None:
    pack, _job = one_job_pack(tmp_path)
    server = HostileComfy(outputs=lambda pid: image_only(f"{pack.name}/cafe", "run-me.sh"))
    server.files[(f"{pack.name}/cafe", "run-me.sh")] = b"#!/bin/sh\necho owned\n"
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("the job makes .png files only" in e for e in errors), errors
    assert server.views == []  # refused before anything was fetched


def test_a_file_from_another_folder_of_the_server_is_refused(tmp_path: Path) -> None:
    pack, _job = one_job_pack(tmp_path)
    outputs = image_only(f"{pack.name}/cafe", "a.png")
    outputs["save.run"]["images"][0]["type"] = "input"  # /view?type=input: the uploads
    server = HostileComfy(outputs=lambda pid: outputs)
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("from its 'input' folder" in e for e in errors), errors
    assert server.views == []


def test_two_thousand_outputs_for_one_job_are_refused(tmp_path: Path) -> None:
    pack, _job = one_job_pack(tmp_path)
    names = [f"img_{i:04d}.png" for i in range(2000)]
    server = HostileComfy(outputs=lambda pid: image_only(f"{pack.name}/cafe", *names))
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("reported 2000 files" in e for e in errors), errors
    assert server.views == []


def test_an_image_without_the_savers_sidecar_is_refused(tmp_path: Path) -> None:
    pack, _job = one_job_pack(tmp_path)
    server = HostileComfy(outputs=lambda pid: image_only(f"{pack.name}/cafe", "a.png"))
    server.files[(f"{pack.name}/cafe", "a.png")] = png_bytes()
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("without the saver's sidecar" in e for e in errors), errors


def test_another_prompts_sidecar_is_waited_out_then_refused(tmp_path: Path) -> None:
    pack, job = one_job_pack(tmp_path)
    other = str(uuid.uuid4())
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(
        outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem, sidecar_prompt=other)
    )
    with server:
        errors = refused_run(pack, server, tmp_path / "out", download_wait_s=0.5)
    assert any(f"belongs to prompt '{other}'" in e for e in errors), errors
    images = [v for v in server.views if v["filename"].endswith(".png")]
    assert images == []  # the image of a prompt that is not ours is never fetched


def test_a_sidecar_that_names_no_prompt_is_refused_at_once_with_the_fix(tmp_path: Path) -> None:
    pack, job = one_job_pack(tmp_path)
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(
        outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem, sidecar_prompt="")
    )
    with server:  # download_wait_s stays 60 s: not waited out
        errors = refused_run(pack, server, tmp_path / "out")
    assert any("update them to this client's version" in e for e in errors), errors


@pytest.mark.parametrize("change", ["other bytes", "a longer file"])
def test_an_image_that_is_not_the_one_its_sidecar_describes_is_refused(
    tmp_path: Path, change: str
) -> None:
    pack, job = one_job_pack(tmp_path)
    subfolder = f"{pack.name}/cafe"
    served = png_bytes(seed=7)  # what an earlier writer left in place
    if change == "other bytes":  # same size, another sha256
        claimed = served[:-1] + bytes([served[-1] ^ 1])
        expected = "is not the file its sidecar describes"
    else:
        claimed = served[: len(served) // 2]
        expected = f"more than the size its sidecar gives ({len(claimed)} bytes)"
    server = HostileComfy(
        outputs=lambda pid: server.saver_outputs(
            pid, subfolder, job.stem, image=served, claimed=claimed
        )
    )
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any(expected in e for e in errors), errors


# -- the local side: symlinks, full disk --------------------------------------------------------


def test_a_symlinked_folder_inside_the_pack_folder_is_never_written_through(
    tmp_path: Path,
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "cafe").symlink_to(elsewhere, target_is_directory=True)
    server = HostileComfy(outputs=lambda pid: {})
    server.files[("p/s", "a.png")] = png_bytes()
    ref = OutputRef("a.png", "p/s", "output", "save.run")
    with server, ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
        with pytest.raises(PackFolderError, match="is a symbolic link") as caught:
            client.download(ref, out / "cafe" / "x.png", root=out)
        with pytest.raises(PackFolderError):  # deeper, and for a fresh folder too
            client.download(ref, out / "cafe" / "deeper" / "x.png", root=out)
        got = client.download(ref, out / "rejected" / "cafe" / "x.png", root=out)
    assert "Remove it" in str(caught.value) and str(out / "cafe") in str(caught.value)
    assert list(elsewhere.iterdir()) == [] and got.path.read_bytes() == png_bytes()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_raises_disk_full_with_how_much_to_free_and_leaves_no_part(
    small_disk: Path,
) -> None:
    big = os.urandom(3 << 20)  # more than the disk holds
    server = HostileComfy(outputs=lambda pid: {})
    server.files[("p/s", "a.png")] = big
    ref = OutputRef("a.png", "p/s", "output", "save.run")
    dest = small_disk / "cafe" / "cafe_001_7.png"
    with server, ComfyClient(config=ServerConfig.from_url(server.url, env={})) as client:
        with pytest.raises(DiskFull) as caught:
            client.download(ref, dest, root=small_disk)
    message = str(caught.value)
    assert message.startswith(f"no space left on {small_disk} — free ") and str(dest) in message
    assert " MB" in message
    assert parts_in(small_disk) == [] and not dest.exists()


def test_a_full_disk_in_a_run_stops_it_without_generating_anything_again(
    small_disk: Path, tmp_path: Path
) -> None:
    pack, job = one_job_pack(tmp_path)
    big = os.urandom(3 << 20)  # a valid image for the job (its sidecar says so) that cannot fit
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(
        outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem, image=big)
    )
    with server, pytest.raises(DiskFull, match="no space left on") as caught:
        run(pack, server, small_disk / "out")
    assert len(server.prompts) == 1, "a full disk is not a lost prompt: nothing regenerated"
    assert parts_in(small_disk) == []
    (entry,) = manifest(small_disk / "out")["jobs"].values()
    assert entry["status"] == "submitted"  # the next run downloads it
    assert " MB" in str(caught.value)
