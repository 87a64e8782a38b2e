"""Resolve once, decide once (issue 9): a pack's pictures are named when it is loaded and never
hashed again; one function makes file stems; the identity gate decides an attempt's fate once
and the folder and the status follow that one verdict; one atomic write (with fsync) for every
file charpack replaces."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charpack.errors import PackFolderError
from charpack.folder.manifest import FileRecord
from charpack.pack import uploads as uploads_module
from charpack.pack.jobs import expand, file_stem
from charpack.pack.packfile import load_pack
from charpack.run.state import PackState, references
from tests.support.loopback import LoopbackServer, QuietHandler

REPO = Path(__file__).resolve().parents[2]
FACE = REPO / "examples" / "faces" / "ava_front.png"

PACK = """\
version: 1
pack: once-pack
seed: 3
character:
  name: Ava
  face_references: [faces/a.png, faces/b.png]
defaults: {width: 256, height: 384}
identity: {threshold: 0.6, max_attempts: 2}
scenes:
  - {name: cafe, prompt: at a cafe, count: 2, init_image: faces/a.png}
  - {name: walk, prompt: in a park, seeds: [5], init_image: faces/a.png}
"""


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every file charpack hashes to name an upload, in order."""
    calls: list[Path] = []
    real = uploads_module.file_sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(uploads_module, "file_sha256", counting)
    yield calls


def make_pack(folder: Path) -> Path:
    (folder / "faces").mkdir(parents=True)
    shutil.copy(FACE, folder / "faces" / "a.png")
    (folder / "faces" / "b.png").write_bytes((folder / "faces" / "a.png").read_bytes() + b"\0")
    (folder / "pack.yaml").write_text(PACK)
    return folder / "pack.yaml"


def test_each_picture_is_named_once_when_the_pack_loads_and_never_again(
    tmp_path: Path, hashed: list[Path]
) -> None:
    path = make_pack(tmp_path / "src")
    pack = load_pack(path)
    faces = tmp_path / "src" / "faces"
    # a.png is a face reference and both scenes' init image: hashed once all the same.
    assert sorted(p.name for p in hashed) == ["a.png", "b.png"]
    assert set(pack.uploads) == {(faces / "a.png").resolve(), (faces / "b.png").resolve()}
    hashed.clear()
    jobs = expand(pack)
    refs = references(pack)
    PackState.open(tmp_path / "out", pack, max_retries=1)
    assert hashed == []  # jobs, the resume identity and the state use the pack's names
    a = pack.uploads[(faces / "a.png").resolve()]
    assert refs["faces/a.png"] == a.sha256
    for job in jobs:
        assert job.uploads[0] == a and a in job.uploads
        assert job.spec.img2img is not None and job.spec.img2img.image == a.image_value


def test_a_picture_changed_after_loading_is_refused_at_upload_not_sent_under_its_old_name(
    tmp_path: Path,
) -> None:
    from charpack.comfy.auth import ServerConfig
    from charpack.comfy.transport import HttpCore
    from charpack.comfy.uploader import Uploader

    pack = load_pack(make_pack(tmp_path / "src"))
    upload = next(iter(pack.uploads.values()))
    upload.path.write_bytes(b"other bytes")
    uploader = Uploader(HttpCore(config=ServerConfig.from_url("http://127.0.0.1:9", env={})))
    with pytest.raises(OSError, match="changed since the pack was loaded"):
        uploader.upload(upload)  # checked before anything is sent (port 9 answers nothing)


def test_file_stems_have_one_maker_with_a_pinned_format(tmp_path: Path) -> None:
    assert file_stem("cafe", 7, 123) == "cafe_007_123"
    assert file_stem("walk", 1234, 0) == "walk_1234_0"
    pack = load_pack(make_pack(tmp_path / "src"))
    job = expand(pack)[-1]
    assert job.stem == file_stem("walk", 1, 5) == "walk_001_5"
    retry = job.with_seed(99)
    assert retry.stem == "walk_001_99" and retry.spec.output.name == retry.stem


def test_the_judge_follows_the_gates_verdict_and_never_decides_again(tmp_path: Path) -> None:
    from charpack.run.retry_rules import Ending

    pack = load_pack(make_pack(tmp_path / "src"))
    state = PackState.open(tmp_path / "out", pack, max_retries=1)
    record: list[FileRecord] = [{"path": "rejected/cafe/x.png", "sha256": "0" * 64, "bytes": 1}]
    # A verdict made where the files were placed wins over what the score alone would say:
    # the folder (chosen by the verdict) and the status cannot disagree.
    pid = state.begin("cafe/001", server="http://s", version=None, seed=1, workflow={})
    high = Ending("success", score=0.9, rejected=True, files=record)
    assert state.end("cafe/001", pid, high).action == "retry"
    pid = state.begin("cafe/001", server="http://s", version=None, seed=2, workflow={})
    low = Ending("success", score=0.1, rejected=False, files=[])
    assert state.end("cafe/001", pid, low).action == "done"
    statuses = [a["status"] for a in state.entry("cafe/001")["attempts"]]
    assert statuses == ["below_threshold", "success"]


def test_the_manifest_is_written_once_per_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charpack.folder.manifest import Manifest
    from charpack.run.retry_rules import Ending

    writes: list[str] = []
    real = Manifest.save

    def save(self: Manifest) -> None:
        real(self)
        writes.append(self.path.read_text())

    monkeypatch.setattr(Manifest, "save", save)
    pack = load_pack(make_pack(tmp_path / "src"))
    state = PackState.open(tmp_path / "out", pack, max_retries=1)
    first = state.begin("cafe/001", server="http://s", version=None, seed=1, workflow={})
    assert len(writes) == 1  # on disk before it can be posted
    state.end("cafe/001", first, Ending("lost", error="moved"))
    assert len(writes) == 1 and state.dirty  # an end waits for the next write
    second = state.begin("cafe/001", server="http://s", version=None, seed=1, workflow={})
    assert len(writes) == 2  # the next begin carries the previous attempt's end
    on_disk = json.loads(writes[-1])["jobs"]["cafe/001"]["attempts"]
    assert [a["status"] for a in on_disk] == ["lost", "submitted"]
    state.end("cafe/001", second, Ending("error", error="boom"))
    state.fail("cafe/002", "scene refused")
    state.fail("walk/001", "scene refused")
    state.flush()
    state.flush()
    assert len(writes) == 3  # three changes of one message, one write; nothing left to write
    jobs = json.loads(writes[-1])["jobs"]
    assert [jobs[k]["status"] for k in ("cafe/001", "cafe/002", "walk/001")] == ["pending"] + [
        "failed"
    ] * 2


def test_atomic_write_fsyncs_before_the_rename_and_a_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from charpack.folder import integrity

    target = tmp_path / "pack" / "manifest.json"
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        steps.append(f"replace {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(integrity.os, "fsync", fsync)
    monkeypatch.setattr(integrity.os, "replace", replace)
    integrity.atomic_write(target, lambda fh: fh.write(b"one"), doing="save", root=tmp_path)
    pid = os.getpid()
    # The file's bytes are on disk before it takes the name; then the rename itself.
    assert steps == ["fsync", f"replace .manifest.json.{pid}.tmp -> manifest.json", "fsync"]

    def broken(fh: Any) -> None:
        fh.write(b"half")
        raise OSError(5, "Input/output error")

    with pytest.raises(PackFolderError, match="cannot save at"):
        integrity.atomic_write(target, broken, doing="save", root=tmp_path)
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.json"]


def test_no_module_replaces_files_by_hand() -> None:
    """Every whole-file replace goes through atomic_write; downloads stream into their own
    ``.part`` file through a folder descriptor (charpack.comfy.landing)."""
    import ast

    package = REPO / "orchestrator"
    allowed = {"folder/integrity.py", "comfy/landing.py", "comfy/downloads.py"}
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename"):
                value = node.value
                if isinstance(value, ast.Name) and value.id == "os":
                    found.append(path.relative_to(package).as_posix())
    assert set(found) <= allowed, sorted(set(found) - allowed)


class _PodProxy(QuietHandler):
    """The pod's auth proxy, as far as the health probe sees it: ``/charpack/health`` sends
    the client elsewhere; following that would find a ready pod."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/charpack/health":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Charpack-Proxy", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_the_pod_health_probe_uses_the_orchestrators_http_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like every ComfyUI call: no proxy from the environment, no redirect followed (the pod's
    token goes to the pod's URL and nowhere else)."""
    from charpack.pod.health import check_health

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with LoopbackServer(_PodProxy) as pod:
        ready, what = check_health(url=pod.url, token="pod-token-abc123", timeout=5)
    assert (ready, what) == (False, "proxy answered HTTP 302 (pod still starting)")


def test_the_attempts_of_one_dispatch_are_written_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charpack.errors import DiskFull
    from charpack.folder.manifest import Manifest
    from charpack.run.state import Begin

    pack = load_pack(make_pack(tmp_path / "src"))
    state = PackState.open(tmp_path / "out", pack, max_retries=1)
    keys = ["cafe/001", "cafe/002", "walk/001"]
    writes: list[int] = []
    real = Manifest.save

    def save(self: Manifest) -> None:
        writes.append(1)
        if len(writes) == 2:
            raise DiskFull("no space left")
        real(self)

    monkeypatch.setattr(Manifest, "save", save)
    ids = state.begin_all([Begin(k, "http://s", None, 1, {}) for k in keys])
    assert len(writes) == 1 and len(ids) == 3  # three attempts, one rewrite
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())["jobs"]
    assert [on_disk[k]["attempts"][-1]["prompt_id"] for k in keys] == ids
    with pytest.raises(DiskFull):
        state.begin_all([Begin(k, "http://s", None, 2, {}) for k in keys])
    # Not on disk, so never posted: none of the three stays recorded in memory either.
    assert [len(state.entry(k)["attempts"]) for k in keys] == [1, 1, 1]
    assert [state.entry(k)["prompt_id"] for k in keys] == ids
