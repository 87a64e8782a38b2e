"""The pack folder's rules for writing: one run at a time, no links followed, a full disk named.

Owns :class:`PackLock` (``<out>/.charpack.lock``: an ``fcntl.flock`` the kernel releases when
its process dies, holding the holder's pid, host and start time for the message a second run
prints), :func:`remove_stale_temps` (the temp files a killed run left: :func:`atomic_write`'s
``.<name>.<pid>.tmp`` and downloads' ``.<name>.<8 hex>.part``), the symlink rule
(:func:`writable`, :func:`ensure_dir`, :func:`open_new`: nothing below the pack folder is
written through a symbolic link; the folder itself may be one the user chose),
:func:`atomic_write` (the one way charpack replaces a file it writes whole: manifest, contact
sheet, published copies, ``charpack plan``'s summary). A full disk is named by
:mod:`charpack.folder.disk`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import PackFolderBusy, PackFolderError
from .disk import FULL_ERRNOS, disk_full, is_full, os_problem

LOCK_NAME = ".charpack.lock"

# What a killed run can leave: a temp file of atomic_write (the manifest, a contact-sheet
# page, a published copy: ``.<final name>.<pid>.tmp``, made by _temp_name below) and a
# download's (``.<final name>.<8 hex>.part``, orchestrator/comfy/landing.py keeps it).
STALE_TMP = re.compile(r"\..+\.\d+\.tmp")
STALE_PART = re.compile(r"\..+\.[0-9a-f]{8}\.part")


# -- the lock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a pack folder's lock."""

    pid: int
    host: str
    since: float  # epoch seconds

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        here = "" if self.host == socket.gethostname() else " (another machine)"
        return f"pid {self.pid} on host {self.host}{here}, since {when}"


class PackLock:
    """An exclusive lock on a pack folder, held for the whole of one ``charpack run``.

    :meth:`acquire` refuses at once with :class:`PackFolderBusy` when another process holds it.
    A lock file left by a run that was killed is not held by anyone (the kernel released it), so
    it is taken over; :attr:`stale` then says whose it was.
    """

    def __init__(self, folder: Path, fd: int, *, stale: Holder | None, made: bool) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.stale = stale
        self.made_folder = made
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> PackLock:
        made = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_problem(exc, folder, "create the pack folder") from None
        path = folder / LOCK_NAME
        while True:
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise os_problem(exc, path, "lock the pack folder") from None
                raise PackFolderBusy(_busy(folder, path, holder)) from None
            # The holder before us may have removed the file after we opened it: then we hold a
            # lock on a file nobody else will open, so open the path again.
            try:
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = _read_holder(fd)
            break
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise os_problem(exc, path, "write the pack folder's lock") from None
        return cls(folder, fd, stale=stale, made=made)

    def release(self, *, remove_folder: bool = False) -> None:
        """Give the folder back; ``remove_folder`` also removes a folder this lock created
        when nothing else was written into it (a run that never started)."""
        if self._fd is None:
            return
        # Unlink before unlocking: a run waiting on this file notices the unlink and retries.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if remove_folder and self.made_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass  # something else is in it now: keep it

    def __enter__(self) -> PackLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(folder: Path) -> Holder | None:
    """The run holding ``folder``'s lock now, if any (for the read-only tools' notes).

    Read from the lock file without locking it, so a run starting meanwhile is never refused
    because of this look; a file left by a killed run also counts (it is taken over by the next
    run), so this is a hint, not a guarantee.
    """
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refused_link(path) from None
        raise os_problem(exc, path, "open the pack folder's lock") from None


def _read_holder(fd: int) -> Holder | None:
    try:
        data: Any = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "null")
        return Holder(pid=int(data["pid"]), host=str(data["host"]), since=float(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _busy(folder: Path, path: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder is not None else "a process that has not said who it is"
    stop = f"stop it (Ctrl-C in its terminal, or kill {holder.pid})" if holder else "stop it"
    return (
        f"{folder} is in use by another charpack run: {who} (lock {path}). Wait for that run to "
        f"finish, {stop} and run the same command again to resume, or pass --out with another "
        "folder. charpack report, contact-sheet and publish can read the folder meanwhile."
    )


# -- stale temp files --------------------------------------------------------------------------


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files a killed run left in ``folder``; returns what was removed.

    Call it only while holding the folder's lock (no other run is writing). Only regular files
    whose names match the manifest's or a download's temp pattern go; links are not followed
    and nothing else is touched.
    """
    removed = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in files:
            if not (STALE_TMP.fullmatch(name) or STALE_PART.fullmatch(name)):
                continue
            path = here / name
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


# -- the symlink rule --------------------------------------------------------------------------


def refused_link(path: Path) -> PackFolderError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return PackFolderError(
        f"{path} is a symbolic link{target}: charpack does not write through links inside a "
        "pack folder, so nothing lands outside it. Remove the link (or move the real folder "
        "into its place) and run again; --out itself may be a link."
    )


def ensure_dir(root: Path, path: Path) -> Path:
    """Make the directory ``path`` (``root`` or below it), refusing any symbolic link or
    non-directory on the way below ``root``. ``root`` itself is the user's choice and may be
    a link."""
    root.mkdir(parents=True, exist_ok=True)
    rel = _below(root, path)
    current = root
    for part in rel.parts:
        current = current / part
        try:
            os.mkdir(current)
            continue
        except FileExistsError:
            pass
        mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode):
            raise refused_link(current)
        if not stat.S_ISDIR(mode):
            raise PackFolderError(
                f"{current} is a file where charpack needs a folder: move it away and run again"
            )
    return path


def writable(root: Path, path: Path) -> Path:
    """``path`` (a file below ``root``) ready to be replaced: its folders exist and are no
    links, and it is not a link itself."""
    ensure_dir(root, path.parent)
    if path.is_symlink():
        raise refused_link(path)
    return path


def refuse_links(root: Path, paths: Iterable[Path]) -> None:
    """Refuse the first of ``paths`` (below ``root``) that is, or lies under, a symbolic link."""
    for path in paths:
        current = root
        for part in _below(root, path).parts:
            current = current / part
            if current.is_symlink():
                raise refused_link(current)
            if not current.exists():
                break


def open_new(path: Path) -> BinaryIO:
    """A new file at ``path`` for writing; never opens through a link (an old file or link of
    that name, e.g. from a killed process with the same pid, is removed first)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        path.unlink(missing_ok=True)  # removes a link itself, never its target
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise disk_full(path, 0) from None
        raise
    return os.fdopen(fd, "wb")


def atomic_write(
    path: Path,
    write: Callable[[BinaryIO], object],
    *,
    doing: str,
    root: Path | None = None,
    size: int = 0,
) -> Path:
    """Replace ``path`` with what ``write`` writes, atomically: a temp file beside it
    (``.<name>.<pid>.tmp``, opened without following a link), flushed and fsynced, renamed over
    ``path``, and the folder fsynced, so a crash leaves the old file or the new one, never half
    of one. On any failure the temp file is removed and the old file stays.

    ``root``: the pack folder ``path`` lies in; its folders are made and no symbolic link below
    it (nor ``path`` itself as one) is written through. A full disk raises
    :class:`~charpack.errors.DiskFull` (``size``: the bytes the write needed); another OSError
    from the write raises :class:`~charpack.errors.PackFolderError` saying what failed
    (``doing``, e.g. "save manifest.json"); an OSError about another file (one ``write``
    reads) is raised as it is.
    """
    try:
        if root is not None:
            writable(root, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_problem(exc, path, doing, size) from None
    tmp = path.with_name(_temp_name(path.name))
    try:
        with open_new(tmp) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is not None and Path(exc.filename) not in (tmp, path):
            raise
        raise _write_problem(exc, path, doing, size) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def place_folder(work: Path, dest: Path) -> Path:
    """Rename the finished folder ``work`` (a sibling of ``dest``) to ``dest``, which must not
    exist: a folder built under a hidden name appears whole or not at all. An existing
    ``dest`` (even an empty one) is refused with ``FileExistsError``, never replaced."""
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} exists")
    os.rename(work, dest)  # a directory onto a missing name: atomic on one file system
    sync_folder(dest.parent)
    return dest


def _temp_name(name: str) -> str:
    # The pattern remove_stale_temps knows (STALE_TMP): a killed run's temp files are found.
    return f".{name}.{os.getpid()}.tmp"


def _write_problem(exc: OSError, path: Path, doing: str, size: int) -> PackFolderError:
    return disk_full(path, size, what=path.name) if is_full(exc) else os_problem(exc, path, doing)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _below(root: Path, path: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        raise PackFolderError(f"{path} is outside the pack folder {root}") from None
