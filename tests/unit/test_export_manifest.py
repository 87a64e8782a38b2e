"""``charpack export-manifest DIR``: a big pack's journaled saves folded into one plain
manifest.json for tools that read the file, never while a run holds the folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from charpack.folder.integrity import PackLock
from charpack.folder.journal import JOURNAL
from charpack.folder.manifest import MANIFEST, Manifest
from tests.support.commands import CHARPACK
from tests.unit.test_state_store import finish, pack_of


def export(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
    return subprocess.run(
        [*CHARPACK, "export-manifest", str(folder)], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


def test_journaled_saves_end_up_in_the_plain_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARPACK_STATE_SNAPSHOT_MAX", "0")  # journal every save after the first
    m = pack_of(tmp_path, 3)
    finish(m, "s/00001", 0.9)
    assert (tmp_path / JOURNAL).stat().st_size > 0
    plain = json.loads((tmp_path / MANIFEST).read_text())
    assert plain["jobs"]["s/00001"]["status"] == "pending"  # the plain file is behind

    run = export(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(3 jobs)" in run.stdout
    assert not (tmp_path / JOURNAL).exists() or (tmp_path / JOURNAL).stat().st_size == 0
    plain = json.loads((tmp_path / MANIFEST).read_text())
    assert plain["jobs"]["s/00001"]["status"] == "done"
    assert Manifest.load(tmp_path).job("s/00001")["attempts"][0]["score"] == 0.9


def test_a_folder_a_run_holds_is_not_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARPACK_STATE_SNAPSHOT_MAX", "0")
    m = pack_of(tmp_path, 2)
    finish(m, "s/00000", 0.8)
    before = (tmp_path / MANIFEST).read_bytes()
    with PackLock.acquire(tmp_path):
        run = export(tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "charpack run" in run.stderr or "busy" in (run.stdout + run.stderr).lower()
    assert (tmp_path / MANIFEST).read_bytes() == before
