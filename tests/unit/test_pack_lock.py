"""The pack folder's write rules on real parts: the lock held by another real process (and taken
over after it is SIGKILLed), the temp files a killed run leaves, the manifest on a real full
tmpfs, symbolic links planted where charpack, its contact sheet and publish write, and reference
files in the pack's identity.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from charpack.errors import DiskFull, PackFolderBusy, PackFolderError
from charpack.folder.contact_sheet import write_contact_sheet
from charpack.folder.integrity import LOCK_NAME, PackLock, holder, remove_stale_temps
from charpack.folder.manifest import Manifest, ManifestError
from charpack.pack.packfile import Pack, load_pack
from charpack.run.state import PackState, settings_digest
from tests.support.commands import CHARPACK
from tests.support.pack_folders import JobSpec, Shot, build
from tests.support.tmpfs import fill, tmpfs

REPO = Path(__file__).resolve().parents[2]
FACE = REPO / "examples" / "faces" / "ava_front.png"

PACK = """\
version: 1
pack: lock-pack
seed: 11
character:
  name: Ava
  lora: {file: character_lora.safetensors, strength: 0.7}
  face_references: [faces/ava_front.png]
defaults: {width: 256, height: 384}
scenes:
  - {name: cafe, prompt: at a cafe, count: 2}
"""

HOLD = """\
import sys
from pathlib import Path
from charpack.folder.integrity import PackLock
lock = PackLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def make_pack(folder: Path) -> Pack:
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    shutil.copy(FACE, folder / "faces")
    (folder / "pack.yaml").write_text(PACK)
    return load_pack(folder / "pack.yaml")


@pytest.fixture
def holding() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def hold(folder: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """Another real process that takes the folder's lock and keeps it until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_a_folder_another_process_holds_is_refused_at_once_naming_it_and_the_fix(
    tmp_path: Path, holding: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "pack"
    proc = hold(out, holding)
    with pytest.raises(PackFolderBusy) as info:
        PackLock.acquire(out)
    message = str(info.value)
    assert f"pid {proc.pid}" in message and socket.gethostname() in message
    assert "since 20" in message and "UTC" in message
    assert "--out with another folder" in message and f"kill {proc.pid}" in message
    found = holder(out)
    assert found is not None and found.pid == proc.pid  # what the read-only tools can say


def test_a_lock_left_by_a_sigkilled_process_is_taken_over_and_says_whose_it_was(
    tmp_path: Path, holding: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "pack"
    proc = hold(out, holding)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert (out / LOCK_NAME).exists()  # killed: nobody removed the file
    lock = PackLock.acquire(out)
    try:
        assert lock.stale is not None and lock.stale.pid == proc.pid
        mine = json.loads((out / LOCK_NAME).read_text())
        assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
        with pytest.raises(PackFolderBusy):  # another open in this process is refused too
            PackLock.acquire(out)
    finally:
        lock.release()
    assert not (out / LOCK_NAME).exists()
    again = PackLock.acquire(out)  # a clean release leaves nothing to take over
    assert again.stale is None
    again.release()


def test_a_lock_released_by_one_run_is_never_held_by_two_after_it(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    first = PackLock.acquire(out)
    first.release()
    second = PackLock.acquire(out)
    with pytest.raises(PackFolderBusy):
        PackLock.acquire(out)
    second.release()
    assert not out.exists() or list(out.iterdir()) == []


def test_only_the_temp_files_a_killed_run_leaves_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    stale = [
        out / ".manifest.json.4242.tmp",
        out / ".contact-sheet.jpg.4242.tmp",
        out / "publish" / "cafe" / ".cafe_001_7.png.4242.tmp",
        out / "cafe" / ".cafe_001_7.png.0a1b2c3d.part",
        out / "rejected" / "cafe" / ".cafe_002_9.json.deadbeef.part",
    ]
    kept = [
        out / "manifest.json",
        out / "cafe" / "cafe_001_7.png",
        out / "notes.tmp",
        out / ".manifest.json.tmp",
        out / "cafe" / "take.part",
        out / "cafe" / ".cafe_001_7.png.NOTHEX00.part",
        out / "publish" / "cafe" / "cafe_001_7.png",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".manifest.json.1.tmp").write_bytes(b"not in the pack")
    (out / "linked").symlink_to(elsewhere)  # links are not followed
    assert sorted(remove_stale_temps(out)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert (elsewhere / ".manifest.json.1.tmp").exists()


def test_a_full_disk_stops_the_manifest_save_cleanly_and_the_old_one_stays_valid(
    pack: Pack, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", size_mb=1) as disk:
        out = disk / "pack"
        state = PackState.open(out, pack, max_retries=2)
        state.save()
        before = (out / "manifest.json").read_text()
        fill(disk / "filler")
        with pytest.raises(DiskFull) as info:
            state.begin("cafe/001", server="http://s:8188", version=None, seed=1, workflow={})
        message = str(info.value)
        assert message.startswith(f"no space left on {disk} — free ") and " MB" in message
        assert "run the same command again" in message
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # no temp file
        assert (out / "manifest.json").read_text() == before
        # The failed attempt was never posted: it is not recorded when a later save succeeds.
        (disk / "filler").unlink()
        state.save()
        again = PackState.open(out, pack, max_retries=2)
        assert again.entry("cafe/001")["attempts"] == []
        assert again.todo() == ["cafe/001", "cafe/002"]


@pytest.fixture
def pack(tmp_path: Path) -> Pack:
    return make_pack(tmp_path / "src")


def test_a_planted_manifest_link_is_refused_and_nothing_is_written_through_it(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    out.mkdir()
    target = tmp_path / "elsewhere.json"
    (out / "manifest.json").symlink_to(target)
    state = PackState.open(tmp_path / "fresh", pack, max_retries=2)
    state.manifest.folder = out
    with pytest.raises(PackFolderError, match="symbolic link") as info:
        state.save()
    assert str(out / "manifest.json") in str(info.value) and "Remove the link" in str(info.value)
    assert not target.exists()
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


def test_a_planted_temp_file_link_is_not_followed(pack: Pack, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / f".manifest.json.{os.getpid()}.tmp").symlink_to(victim)
    state = PackState.open(out, pack, max_retries=2)
    state.save()
    assert victim.read_text() == "keep me"
    assert json.loads((out / "manifest.json").read_text())["pack"]["name"] == "lock-pack"


def test_a_face_reference_replaced_under_the_same_name_is_refused_naming_the_file(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    PackState.open(out, pack, max_retries=2).save()
    face = tmp_path / "src" / "faces" / "ava_front.png"
    original = face.read_bytes()
    with Image.open(FACE) as img:
        img.rotate(90, expand=True).save(face)  # another face, same name, same pack file
    changed = load_pack(tmp_path / "src" / "pack.yaml")
    with pytest.raises(ManifestError) as info:
        PackState.open(out, changed, max_retries=2)
    message = str(info.value)
    assert "faces/ava_front.png" in message and "Put the old file back" in message
    assert "--out with a new folder" in message
    face.write_bytes(original)  # the old file back: it resumes
    PackState.open(out, load_pack(tmp_path / "src" / "pack.yaml"), max_retries=2)


def test_a_manifest_from_before_reference_hashes_resumes_and_then_pins_them(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    PackState.open(out, pack, max_retries=2).save()
    data = json.loads((out / "manifest.json").read_text())
    old = data["pack"]
    old["sha256"] = settings_digest(pack)  # what older charpack stored
    del old["references"], old["settings_sha256"]
    (out / "manifest.json").write_text(json.dumps(data))
    state = PackState.open(out, pack, max_retries=2)
    state.save()
    assert Manifest.load(out).header["pack"]["references"] == {
        "faces/ava_front.png": state.manifest.header["pack"]["references"]["faces/ava_front.png"]
    }


def test_the_lock_refusal_comes_before_the_first_byte(tmp_path: Path) -> None:
    """A refused run writes nothing into the folder (not even its own lock content)."""
    out = tmp_path / "pack"
    lock = PackLock.acquire(out)
    content = (out / LOCK_NAME).read_bytes()
    with pytest.raises(PackFolderBusy):
        PackLock.acquire(out)
    assert (out / LOCK_NAME).read_bytes() == content
    lock.release()


def small_folder(folder: Path) -> None:
    build(folder, [JobSpec("cafe", 1, [Shot(seed=7, score=0.9)])], size=(32, 48))


@pytest.mark.parametrize("command", ["publish", "contact-sheet"])
def test_the_pack_folder_tools_refuse_a_planted_link_and_write_nothing_through_it(
    command: str, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    small_folder(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = out / ("publish" if command == "publish" else "contact-sheet.jpg")
    planted.symlink_to(elsewhere if command == "publish" else elsewhere / "sheet.jpg")
    done = subprocess.run(
        [*CHARPACK, command, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{planted} is a symbolic link" in done.stderr and "Remove the link" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_contact_sheets_temp_file_is_never_opened_through_a_link(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    small_folder(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / f".contact-sheet.jpg.{os.getpid()}.tmp").symlink_to(victim)
    sheet = write_contact_sheet(out)
    assert victim.read_text() == "keep me"
    with Image.open(sheet) as img:
        assert img.format == "JPEG"
