"""A full disk, named: what the pack folder's writes raise when the disk or the quota is full.

Owns :func:`disk_full`, which turns ``ENOSPC``/``EDQUOT`` into :class:`~charpack.errors.DiskFull`
naming the mount point and how much to free, and :func:`os_problem` for any other OSError of a
write in the pack folder. Used by every writer: :mod:`charpack.folder.integrity`, the run, the
downloads (:mod:`charpack.comfy.landing`).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import DiskFull, PackFolderError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MB = 1_000_000
HEADROOM = 16 * MB  # free this much beyond what the failed write needed


def is_full(exc: BaseException) -> bool:
    """True for the OSError of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    dev = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def disk_full(path: Path, needed: int, *, what: str = "") -> DiskFull:
    """The :class:`DiskFull` for a write of ``needed`` bytes at ``path`` that found no room."""
    try:
        mount = mount_point(path)
        free = shutil.disk_usage(mount).free
    except OSError:
        mount, free = Path(os.path.abspath(path)).parent, 0
    short = max(0, needed - free) + HEADROOM
    doing = f" while writing {what}" if what else ""
    return DiskFull(
        f"no space left on {mount} — free {-(-short // MB)} MB{doing} ({free / MB:.1f} MB free "
        f"now), then run the same command again to resume: finished prompts are downloaded, "
        "nothing is generated twice"
    )


def os_problem(exc: OSError, path: Path, doing: str) -> PackFolderError:
    """A :class:`PackFolderError` (:class:`DiskFull` for a full disk) for an OSError while
    ``doing`` something at ``path``."""
    if exc.errno in FULL_ERRNOS:
        return disk_full(path, 0)
    return PackFolderError(
        f"cannot {doing} at {path}: {exc.strerror or exc} — check the folder's permissions and "
        "that its disk is mounted writable, or pass --out with another folder"
    )
