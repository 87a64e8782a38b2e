"""``manifest.journal``: the changes made since ``manifest.json`` was last written whole.

Owns the journal file of a pack folder: one JSON object per line, appended and fsynced, so that
recording a change costs the size of the change, not the size of the pack. The first line names
the snapshot the journal continues (``{"journal": ID}``, ID being ``manifest.json``'s
``journal_id``); each later line is one save: ``{"jobs": [entry, ...], "header": {...}?,
"updated": t}``, whole entries that replace those of the same key. A save is one ``write`` of
one line: a process killed mid-write leaves a line without its newline (or one that does not
parse), which :func:`read_journal` drops with everything after it, so a save is on disk whole
or not at all. A journal whose ID is not the snapshot's (the snapshot was rewritten and the
process died before removing it) is stale and ignored: everything in it is in the snapshot.

It does not decide when to journal and when to rewrite the snapshot:
:class:`charpack.folder.manifest.Manifest` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .disk import disk_full, is_full, os_problem
from .integrity import sync_folder, writable

JOURNAL = "manifest.journal"


@dataclass
class Replay:
    """What a journal holds for its snapshot: the saves in order, and how many bytes."""

    saves: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0  # bytes of the journal file (0: none, or stale)


def read_journal(folder: Path, journal_id: str | None) -> Replay:
    """The complete saves of ``folder``'s journal when it continues snapshot ``journal_id``;
    none when there is no journal, it belongs to another snapshot, or ``journal_id`` is None."""
    path = folder / JOURNAL
    if journal_id is None:
        return Replay()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Replay()
    lines = data.split(b"\n")
    # Only lines ended by a newline were written whole; the last piece never is.
    complete = lines[:-1]
    if not complete or _parse(complete[0]).get("journal") != journal_id:
        return Replay()
    saves = []
    for line in complete[1:]:
        record = _parse(line)
        if not isinstance(record.get("jobs"), list):
            break  # torn or foreign: nothing after it is trusted
        saves.append(record)
    return Replay(saves, len(data))


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class JournalWriter:
    """The journal a run appends to; opened fresh for one snapshot (:meth:`start`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / JOURNAL
        self.size = 0
        self._fd: int | None = None

    @property
    def open(self) -> bool:
        return self._fd is not None

    def start(self, journal_id: str) -> None:
        """A new journal continuing snapshot ``journal_id`` (an older journal is replaced)."""
        self.close()
        head = json.dumps({"journal": journal_id}).encode() + b"\n"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            writable(self.folder, self.path)  # refuses a planted symbolic link
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise _problem(exc, self.path, len(head)) from None
        self._fd, self.size = fd, 0
        self._write(head)
        sync_folder(self.folder)  # the new file's name is durable too

    def append(self, record: str) -> None:
        """Append one save (``record``: one JSON object, no newline in it), fsynced. On failure
        the journal is cut back to its last complete save (the save is not recorded) and the
        error raised."""
        self._write(record.encode("utf-8") + b"\n")

    def _write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None, "start the journal first"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                self.close()  # cannot cut it back: the next save rewrites the snapshot
            raise _problem(exc, self.path, len(data)) from None
        self.size += len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the journal (its saves are in the snapshot now)."""
        self.close()
        self.size = 0
        try:
            self.path.unlink(missing_ok=True)
        except IsADirectoryError:
            pass


def _problem(exc: OSError, path: Path, size: int) -> Exception:
    return (
        disk_full(path, size, what=path.name)
        if is_full(exc)
        else os_problem(exc, path, f"append to {JOURNAL}")
    )
