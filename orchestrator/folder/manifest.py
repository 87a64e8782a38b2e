"""The pack folder's ``manifest.json``: the record of every job and every attempt.

Layout of a pack folder (names are deterministic)::

    <out>/manifest.json
    <out>/manifest.journal                      changes since manifest.json was written whole
    <out>/<scene>/<scene>_<index>_<seed>.png    accepted images (+ .json sidecar from the server)
    <out>/rejected/<scene>/<…>.png              attempts below the identity threshold (kept)
    <out>/contact-sheet.jpg                     thumbnails with scene, seed and score
    <out>/publish/…                             copies with every metadata chunk removed

What one :meth:`Manifest.save` costs does not grow with the pack. While ``manifest.json`` is
small (:data:`SNAPSHOT_MAX`, 256 KiB: a few hundred pending jobs or a few dozen finished ones)
each save rewrites it atomically (:func:`~charpack.folder.integrity.atomic_write`: temp file,
fsync, rename), so it is always the whole truth. Past that, a save appends just the job
entries that changed, as one fsynced line, to ``manifest.journal``
(:mod:`charpack.folder.journal`), and :meth:`Manifest.load` reads ``manifest.json`` and then
replays the journal. ``manifest.json`` is written whole again (the journal folded in and
removed) by the first save of every run, when the journal outgrows it
(:data:`COMPACT_FACTOR`), and by :meth:`Manifest.export` (the end of a run, Ctrl-C included):
after a kill the next load still sees every save, and the next run rewrites it. A crash at any
instant leaves the last complete save: a rename is atomic and a torn journal line is dropped.
A full disk raises :class:`~charpack.errors.DiskFull` and leaves the previous save. Each job
entry is serialised once when it changes and cached. Secrets never enter it: server URLs are
stored redacted by the caller.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

from ..errors import CharpackError
from .integrity import atomic_write
from .journal import JournalWriter, read_journal

FORMAT = 1
MANIFEST = "manifest.json"

# Rewrite manifest.json whole on each save while it is at most this big (bytes; the variable
# CHARPACK_STATE_SNAPSHOT_MAX overrides it, 0 journals every save after a run's first).
SNAPSHOT_MAX = 256 * 1024
# Fold the journal into manifest.json once it is this many times manifest.json's size: bounds
# the journal (and a load's replay) while keeping the rewrite's cost per save constant.
COMPACT_FACTOR = 4

EntryStatus = Literal["pending", "submitted", "done", "below_threshold", "failed"]
AttemptStatus = Literal[
    "submitted", "running", "success", "error", "interrupted", "lost", "below_threshold"
]


class FileRecord(TypedDict):
    path: str  # relative to the pack folder, POSIX separators
    sha256: str
    bytes: int


class Attempt(TypedDict, total=False):
    attempt: int
    prompt_id: str
    seed: int
    server: str  # redacted URL
    comfyui_version: str | None
    workflow: dict[str, Any]  # the submitted API graph
    submitted_at: float  # epoch seconds
    started_at: float | None
    finished_at: float | None
    queue_wait_s: float | None
    execution_s: float | None
    stage_timings: dict[str, float]  # stage (node id prefix) -> seconds
    status: AttemptStatus
    score: float | None
    face: bool  # False: the identity node found no face (score is None)
    stopped_at: str  # "early_gate": the early identity gate blocked it (no image, no score)
    early_score: float | None  # the early gate's score of a blocked attempt
    error: str | None
    files: list[FileRecord]


class JobEntry(TypedDict, total=False):
    key: str
    scene: str
    index: int
    status: EntryStatus
    seed: int  # seed of the latest (or accepted) attempt
    prompt_id: str | None
    server: str | None
    score: float | None
    error: str | None
    image: str | None  # accepted image, relative path
    attempts: list[Attempt]
    # Index into attempts where the job's retry budgets start counting (a failed job gets a
    # fresh budget when the pack is run again); absent = 0.
    budget_from: int


class ManifestError(CharpackError):
    """A manifest cannot be read or belongs to another pack."""

    exit_code = 2


class Manifest:
    """A pack folder's manifest in memory; :meth:`save` makes every change durable."""

    def __init__(self, folder: Path, header: dict[str, Any], jobs: dict[str, JobEntry]) -> None:
        self.folder = folder
        self.header = header
        self._jobs = jobs
        self._cache: dict[str, str] = {}  # key -> the entry's JSON, until it changes
        self._bytes = 0  # sum of the cached texts (what manifest.json's size grows with)
        self._dirty: dict[str, None] = {}  # keys changed since the last save, in put order
        self._saved_header: str | None = None  # the header as last saved (without "updated")
        self._snapshot_bytes = 0  # size of manifest.json as this object last wrote it
        self._journal = JournalWriter(folder)
        self._journaling = False  # saves since the last snapshot are in the journal

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def run_id(self) -> str:
        return str(self.header["run_id"])

    @classmethod
    def create(cls, folder: Path, *, pack: dict[str, Any], identity: dict[str, Any]) -> Manifest:
        now = time.time()
        header = {
            "format": FORMAT,
            "run_id": str(uuid.uuid4()),
            "created": now,
            "updated": now,
            "pack": pack,
            "identity": identity,
            "servers": {},
        }
        return cls(folder, header, {})

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """``manifest.json`` with the saves its journal holds replayed; writes nothing. A
        reader that meets a run's fold-in (manifest.json replaced, the journal removed, while
        it read them) reads both again, so it never misses the journal's saves."""
        for _ in range(3):
            data, inode = _read_snapshot(folder / MANIFEST, folder)
            snapshot = data.get("journal_id")
            try:
                replay = read_journal(folder, snapshot)
            except OSError as exc:
                raise ManifestError(
                    f"{folder / 'manifest.journal'}: unreadable ({exc}) — check the folder's "
                    "permissions; without it the latest changes of the run are missing"
                ) from None
            try:
                if os.stat(folder / MANIFEST).st_ino == inode:
                    break
            except OSError:
                break
        jobs = data.pop("jobs", {})
        for save in replay.saves:
            for entry in save["jobs"]:
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    jobs[entry["key"]] = entry
            if isinstance(save.get("header"), dict):
                data = {**save["header"], "journal_id": snapshot}
            data["updated"] = save.get("updated", data.get("updated"))
        return cls(folder, data, jobs)

    @classmethod
    def exists(cls, folder: Path) -> bool:
        return (folder / MANIFEST).is_file()

    # --- jobs ---------------------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._jobs

    def __iter__(self) -> Iterator[JobEntry]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def job(self, key: str) -> JobEntry:
        return self._jobs[key]

    def put(self, entry: JobEntry) -> None:
        """Insert or replace a job entry (call again after changing it)."""
        key = entry["key"]
        self._jobs[key] = entry
        old = self._cache.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._dirty[key] = None

    def set_server(self, url: str, info: dict[str, Any]) -> None:
        self.header["servers"][url] = info

    # --- saving -------------------------------------------------------------------------------

    def _text(self, key: str) -> str:
        text = self._cache.get(key)
        if text is None:
            text = json.dumps(self._jobs[key], sort_keys=True)
            self._cache[key] = text
            self._bytes += len(text)
        return text

    def _header_text(self) -> str:
        return json.dumps({k: v for k, v in self.header.items() if k != "updated"}, sort_keys=True)

    def to_json(self) -> str:
        """The whole manifest as ``manifest.json`` holds it (every job entry)."""
        self.header["updated"] = time.time()
        head = json.dumps(self.header, indent=1, sort_keys=True)
        parts = [f"  {json.dumps(key)}: {self._text(key)}" for key in self._jobs]
        body = ",\n".join(parts)
        return head[:-2] + ',\n "jobs": {\n' + body + "\n }\n}\n"

    def save(self) -> None:
        """Make every change since the last save durable, at a cost that does not grow with
        the pack: rewrite ``manifest.json`` while it is small (and on the first save of a
        run), else append the changed entries to the journal. A crash leaves the previous
        save or this one, never a mix.

        A full disk raises :class:`~charpack.errors.DiskFull` and any other write failure
        :class:`~charpack.errors.PackFolderError`; either way nothing of this save stays on
        disk and the previous one is intact. ``manifest.json`` (or the journal) as a symbolic
        link is refused.
        """
        if self._saved_header is None or (self._journaling and not self._journal.open):
            self.export()  # a run's first save, or a journal that could not be cut back
        elif self._journal.open:
            if self._journal.size > COMPACT_FACTOR * max(self._snapshot_bytes, snapshot_max()):
                self.export()
            else:
                self._append()
        elif self._bytes + len(self._header_text()) <= snapshot_max():
            self.export()
        else:
            self._journal.start(str(self.header["journal_id"]))
            self._journaling = True
            self._append()

    def export(self) -> None:
        """Write ``manifest.json`` whole, atomically, and drop the journal (its saves are in
        it now): what readers of the plain file see is the whole truth again."""
        before = self.header.get("journal_id")
        self.header["journal_id"] = uuid.uuid4().hex  # a journal of before no longer applies
        try:
            data = self.to_json().encode("utf-8")
            atomic_write(
                self.path,
                lambda fh: fh.write(data),
                doing=f"save {MANIFEST}",
                root=self.folder,
                size=len(data),
            )
        except BaseException:
            self.header["journal_id"] = before
            raise
        self._snapshot_bytes = len(data)
        self._saved_header = self._header_text()
        self._dirty.clear()
        if self._journaling or self._journal.open or self._journal.path.exists():
            self._journal.remove()
        self._journaling = False

    def _append(self) -> None:
        texts = [self._text(key) for key in self._dirty]  # never a walk over every job
        record = '{"jobs": [' + ", ".join(texts) + "]"
        header = self._header_text()
        if header != self._saved_header:
            record += ', "header": ' + header
        now = time.time()
        record += f', "updated": {json.dumps(now)}}}'
        self._journal.append(record)
        self.header["updated"] = now
        self._saved_header = header
        self._dirty.clear()

    def close(self) -> None:
        """End of the run: fold a journal into ``manifest.json`` (nothing when there is
        none) and release the journal file."""
        if self._journaling:
            self.export()
        self._journal.close()


def _read_snapshot(path: Path, folder: Path) -> tuple[dict[str, Any], int]:
    """``manifest.json``'s content and the inode it was read from."""
    try:
        with path.open("rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            data = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no manifest — is {folder} a pack folder made by `charpack run`?"
        ) from None
    except (OSError, ValueError) as exc:
        raise ManifestError(
            f"{path}: unreadable manifest ({exc}) — restore it from backup or start a new "
            "pack folder"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ManifestError(
            f"{path}: manifest format {found!r} is not {FORMAT} — use the "
            "charpack version that made it"
        )
    return data, inode


def snapshot_max() -> int:
    """:data:`SNAPSHOT_MAX`, or ``$CHARPACK_STATE_SNAPSHOT_MAX`` when set (bytes)."""
    value = os.environ.get("CHARPACK_STATE_SNAPSHOT_MAX", "").strip()
    try:
        return max(0, int(value)) if value else SNAPSHOT_MAX
    except ValueError:
        return SNAPSHOT_MAX
