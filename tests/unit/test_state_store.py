"""The pack state's store: a small pack's manifest.json is rewritten on each save; a big pack's
saves append only what changed to manifest.journal (the same bytes whatever the pack's size),
load replays it, a torn or stale journal is ignored, a failed append leaves the previous save,
and the end of a run (or the next run's first save) leaves manifest.json whole again."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from charpack.errors import DiskFull, PackFolderError
from charpack.folder import journal as journal_module
from charpack.folder.journal import JOURNAL
from charpack.folder.manifest import (
    COMPACT_FACTOR,
    MANIFEST,
    SNAPSHOT_MAX,
    JobEntry,
    Manifest,
)

WORKFLOW = {
    f"n{i}": {"class_type": "KSampler", "inputs": {"seed": i, "x": "y" * 40}} for i in range(60)
}


def entry(key: str, status: str = "pending") -> JobEntry:
    return {"key": key, "scene": key.split("/")[0], "index": 1, "status": status, "attempts": []}


def pack_of(folder: Path, jobs: int) -> Manifest:
    m = Manifest.create(folder, pack={"name": "p"}, identity={"threshold": 0.5})
    for i in range(jobs):
        m.put(entry(f"s/{i:05d}"))
    m.save()
    return m


def finish(m: Manifest, key: str, score: float) -> None:
    e = m.job(key)
    e["status"] = "done"
    e["attempts"].append({"attempt": 1, "prompt_id": key, "score": score, "workflow": WORKFLOW})
    m.put(e)
    m.save()


def on_disk(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


@pytest.fixture
def journaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal every save after the first, as a pack past SNAPSHOT_MAX does."""
    monkeypatch.setenv("CHARPACK_STATE_SNAPSHOT_MAX", "0")


def test_a_small_pack_rewrites_manifest_json_on_every_save_and_keeps_no_journal(
    tmp_path: Path,
) -> None:
    m = pack_of(tmp_path, 3)
    finish(m, "s/00001", 0.7)
    assert on_disk(tmp_path)["jobs"]["s/00001"]["status"] == "done"
    assert not (tmp_path / JOURNAL).exists()
    assert SNAPSHOT_MAX >= 64 * 1024  # the existing tools' small folders stay plain JSON


@pytest.mark.usefixtures("journaled")
def test_a_big_pack_appends_the_change_only_and_load_replays_it(tmp_path: Path) -> None:
    m = pack_of(tmp_path, 20)
    snapshot = (tmp_path / MANIFEST).read_bytes()
    finish(m, "s/00003", 0.8)
    m.set_server("http://pod-a", {"version": "0.3.75"})
    e = m.job("s/00004")
    e["status"] = "submitted"
    m.put(e)
    m.save()
    assert (tmp_path / MANIFEST).read_bytes() == snapshot  # not rewritten
    again = Manifest.load(tmp_path)
    assert [x["status"] for x in again][3:5] == ["done", "submitted"]
    assert again.job("s/00003")["attempts"][0]["workflow"] == WORKFLOW
    assert again.header["servers"] == {"http://pod-a": {"version": "0.3.75"}}
    assert len(again) == 20 and again.run_id == m.run_id
    m.close()  # the end of the run: one plain file again
    assert not (tmp_path / JOURNAL).exists()
    data = on_disk(tmp_path)
    assert data["jobs"]["s/00003"]["status"] == "done" and data["servers"]


@pytest.mark.usefixtures("journaled")
def test_what_a_save_writes_does_not_grow_with_the_pack(tmp_path: Path) -> None:
    grown = []
    for jobs in (200, 5_000):
        m = pack_of(tmp_path / str(jobs), jobs)
        finish(m, "s/00001", 0.7)  # starts the journal
        before = (tmp_path / str(jobs) / JOURNAL).stat().st_size
        finish(m, "s/00002", 0.7)
        grown.append((tmp_path / str(jobs) / JOURNAL).stat().st_size - before)
    # The same line at both sizes, give or take the digits of its timestamp.
    assert abs(grown[0] - grown[1]) <= 4 and grown[1] < 10_000


@pytest.mark.usefixtures("journaled")
def test_a_torn_last_line_and_a_stale_journal_are_ignored(tmp_path: Path) -> None:
    m = pack_of(tmp_path, 3)
    finish(m, "s/00001", 0.7)
    with (tmp_path / JOURNAL).open("ab") as fh:  # a save killed mid-write
        fh.write(b'{"jobs": [{"key": "s/00002", "status": "do')
    assert Manifest.load(tmp_path).job("s/00002")["status"] == "pending"
    assert Manifest.load(tmp_path).job("s/00001")["status"] == "done"
    # manifest.json rewritten, and the process died before removing the journal it supersedes
    journal = (tmp_path / JOURNAL).read_bytes()
    m.export()
    (tmp_path / JOURNAL).write_bytes(journal.replace(b'"done"', b'"failed"'))
    assert Manifest.load(tmp_path).job("s/00001")["status"] == "done"


@pytest.mark.usefixtures("journaled")
def test_a_failed_append_leaves_the_previous_save_and_the_next_save_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = pack_of(tmp_path, 200)  # big enough that the next save appends
    finish(m, "s/00000", 0.7)
    real = os.write

    def half_then_full(fd: int, data: Any) -> int:
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(DiskFull, match="no space left"):
        finish(m, "s/00001", 0.9)
    monkeypatch.setattr(journal_module.os, "write", real)
    assert Manifest.load(tmp_path).job("s/00001")["status"] == "pending"  # not half of it
    m.save()  # the entry is still changed in memory: this save records it
    assert Manifest.load(tmp_path).job("s/00001")["status"] == "done"


@pytest.mark.usefixtures("journaled")
def test_a_new_runs_first_save_and_a_journal_past_its_bound_rewrite_manifest_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = pack_of(tmp_path, 3)
    finish(m, "s/00000", 0.7)
    resumed = Manifest.load(tmp_path)
    resumed.save()  # what PackState.open's run does first: one plain file, no journal
    assert not (tmp_path / JOURNAL).exists()
    assert on_disk(tmp_path)["jobs"]["s/00000"]["status"] == "done"
    ratios = []  # journal size / manifest.json size after each save
    for n in range(40):
        e = resumed.job("s/00001")
        e["attempts"].append({"attempt": n, "workflow": WORKFLOW})
        resumed.put(e)
        resumed.save()
        journal = tmp_path / JOURNAL
        size = journal.stat().st_size if journal.exists() else 0
        ratios.append(size / (tmp_path / MANIFEST).stat().st_size)
    assert 0 in ratios[5:]  # folded back into manifest.json on the way
    assert max(ratios) < 2 * COMPACT_FACTOR  # one save past the bound at most
    assert len(Manifest.load(tmp_path).job("s/00001")["attempts"]) == 40


@pytest.mark.usefixtures("journaled")
def test_a_journal_planted_as_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    m = pack_of(tmp_path / "pack", 2)
    target = tmp_path / "elsewhere.txt"
    target.write_text("theirs")
    (tmp_path / "pack" / JOURNAL).symlink_to(target)
    with pytest.raises(PackFolderError, match="is a symbolic link"):
        finish(m, "s/00000", 0.7)
    assert target.read_text() == "theirs"


@pytest.mark.usefixtures("journaled")
def test_a_reader_that_meets_a_fold_in_reads_again_and_misses_no_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charpack.folder import manifest as manifest_module

    m = pack_of(tmp_path, 200)
    finish(m, "s/00007", 0.7)  # in the journal only
    real = manifest_module.read_journal
    calls: list[int] = []

    def fold_in_meanwhile(folder: Path, journal_id: str | None) -> Any:
        if not calls:  # the run folds the journal in after the reader read manifest.json
            m.export()
        calls.append(1)
        return real(folder, journal_id)

    monkeypatch.setattr(manifest_module, "read_journal", fold_in_meanwhile)
    assert Manifest.load(tmp_path).job("s/00007")["status"] == "done"
    assert len(calls) == 2
