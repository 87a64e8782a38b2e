"""Where a download lands: real folders inside the pack folder, a temp file, an atomic rename.

A server never chooses a local path, and nothing a download writes follows a symbolic link:
:func:`open_folder` reaches the destination's folder from the pack folder one real folder at a
time (``O_NOFOLLOW``), the temporary file ``.<name>.<8 hex>.part`` is created there with
``O_EXCL | O_NOFOLLOW`` (:func:`create`), and it takes the final name by ``os.replace`` only
once it is complete and fsynced. A full disk raises :class:`~charpack.errors.DiskFull` saying
how much to free (:func:`guard_write`). :func:`write_file` writes bytes already in memory (a
sidecar) the same way. What is fetched is :mod:`charpack.comfy.downloads`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PackFolderError
from ..folder.disk import FULL_ERRNOS, disk_full

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Downloaded:
    """A file fetched from ``/view``: where it is now, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    size: int


def write_file(root: Path, dest: Path, data: bytes) -> Downloaded:
    """Write ``data`` to ``dest`` below ``root`` as a download lands (no symbolic link
    followed, temp file, fsync, atomic rename, :class:`DiskFull` when the disk fills)."""
    folder = open_folder(root, dest)
    try:
        tmp = part_name(dest.name)
        fd = create(folder, tmp, dest)
        try:
            with os.fdopen(fd, "wb") as fh:
                guard_write(fh.write, data, dest, len(data))
                guard_write(lambda _: os.fsync(fh.fileno()), b"", dest, len(data))
            os.replace(tmp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            unlink(folder, tmp)
            raise
    finally:
        os.close(folder)
    return Downloaded(path=dest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def part_name(name: str) -> str:
    # The naming the next run's start cleans up after a killed run: .<name>.<8 hex>.part
    return f".{name}.{secrets.token_hex(4)}.part"


def open_folder(root: Path, dest: Path) -> int:
    """A descriptor of ``dest``'s folder, reached from ``root`` one real folder at a time
    (created when missing); :class:`PackFolderError` for a symbolic link or a file on the way."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        rel = dest.parent.relative_to(root)
    except ValueError:
        raise ValueError(f"{dest} is not inside {root}") from None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = root
    try:
        for part in rel.parts:
            here = here / part
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if here.is_symlink() else "not a folder"
                    raise PackFolderError(
                        f"{here} is {kind}; charpack writes only into real folders inside "
                        f"the pack folder {root}. Remove it (or move it away) and run again."
                    ) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def create(folder: int, tmp: str, dest: Path) -> int:
    try:
        return os.open(tmp, _CREATE, 0o644, dir_fd=folder)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise disk_full(dest, 0, what=str(dest)) from None
        raise


def land(folder: int, tmp: str, dest: Path) -> None:
    """The complete, fsynced ``tmp`` (in the folder descriptor ``folder``) takes ``dest``'s
    name: one atomic rename, so ``dest`` is the whole file or the one before."""
    os.replace(tmp, dest.name, src_dir_fd=folder, dst_dir_fd=folder)


def unlink(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass


def guard_write(write: Callable[[bytes], Any], data: bytes, dest: Path, needed: int) -> None:
    try:
        write(data)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise disk_full(dest, needed, what=str(dest)) from None
        raise
