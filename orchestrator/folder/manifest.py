"""The pack folder's ``manifest.json``: the record of every job and every attempt.

Layout of a pack folder (names are deterministic)::

    <out>/manifest.json
    <out>/<scene>/<scene>_<index>_<seed>.png    accepted images (+ .json sidecar from the server)
    <out>/rejected/<scene>/<…>.png              attempts below the identity threshold (kept)
    <out>/contact-sheet.jpg                     thumbnails with scene, seed and score
    <out>/publish/…                             copies with every metadata chunk stripped

The manifest is rewritten atomically (:func:`~charpack.folder.integrity.atomic_write`: temp
file, fsync, rename) after every change, so a crash
leaves the previous complete version, and so does a full disk (:class:`~charpack.errors.
DiskFull`, the temp file removed). Each job entry is serialised once when it changes and
cached, so rewriting a manifest of thousands of jobs costs a concatenation, not a full
``json.dumps``. Secrets never enter it: server URLs are stored redacted by the caller.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

from ..errors import CharpackError
from .integrity import atomic_write

FORMAT = 1
MANIFEST = "manifest.json"

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
    """In-memory manifest with cached per-job JSON and atomic saves."""

    def __init__(self, folder: Path, header: dict[str, Any], jobs: dict[str, JobEntry]) -> None:
        self.folder = folder
        self.header = header
        self._jobs = jobs
        self._cache: dict[str, str] = {}

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
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(
                f"{path}: no manifest — is {folder} a pack folder made by `charpack run`?"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(
                f"{path}: unreadable manifest ({exc}) — restore it from backup or start a new "
                "pack folder"
            ) from None
        if data.get("format") != FORMAT:
            raise ManifestError(
                f"{path}: manifest format {data.get('format')!r} is not {FORMAT} — use the "
                "charpack version that made it"
            )
        jobs = data.pop("jobs", {})
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
        self._cache.pop(key, None)

    def set_server(self, url: str, info: dict[str, Any]) -> None:
        self.header["servers"][url] = info

    # --- saving -------------------------------------------------------------------------------

    def to_json(self) -> str:
        self.header["updated"] = time.time()
        head = json.dumps(self.header, indent=1, sort_keys=True)
        parts = []
        for key, entry in self._jobs.items():
            text = self._cache.get(key)
            if text is None:
                text = json.dumps(entry, sort_keys=True)
                self._cache[key] = text
            parts.append(f"  {json.dumps(key)}: {text}")
        body = ",\n".join(parts)
        return head[:-2] + ',\n "jobs": {\n' + body + "\n }\n}\n"

    def save(self) -> None:
        """Write atomically: a crash leaves the previous complete manifest.

        A full disk raises :class:`~charpack.errors.DiskFull` and any other write failure
        :class:`~charpack.errors.PackFolderError`; either way the temp file is removed and
        the previous manifest stays. ``manifest.json`` as a symbolic link is refused.
        """
        data = self.to_json().encode("utf-8")
        atomic_write(
            self.path,
            lambda fh: fh.write(data),
            doing=f"save {MANIFEST}",
            root=self.folder,
            size=len(data),
        )
