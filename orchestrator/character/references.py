"""The checks of a character's face references, each problem naming its file and the fix.

Owns what a reference must be before anything is trained from it: 3–5 pictures, PNG, JPEG or
WebP by content (not by file name), at most 10 MB, decodable, short side at least 512 px, no
picture twice, and exactly one face (counted on the server by ``CharpackFaceCheck``; this
module reads that node's UI entries). It does not find faces itself and talks to no server.

Public API::

    check_references(paths: Sequence[Path]) -> list[Finding]     # files: count, format, size
    face_problems(face_checks: Sequence[Mapping[str, Any]]) -> list[Finding]
                                          # CharpackFaceCheck UI entries {"label", "count", ...}

Both return :class:`~charpack.check.findings.Finding` errors (codes ``reference.<what>``);
an empty list means the references pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..check.findings import Finding

MIN_REFERENCES, MAX_REFERENCES = 3, 5
MAX_BYTES = 10 * 1024 * 1024
MIN_SHORT_SIDE = 512


def check_references(paths: Sequence[Path]) -> list[Finding]:
    """Every problem of the reference files ``paths`` (count first, then file by file)."""
    problems: list[Finding] = []
    if not MIN_REFERENCES <= len(paths) <= MAX_REFERENCES:
        problems.append(_count_problem(paths))
    seen: dict[str, Path] = {}
    for path in paths:
        problem = check_reference(path)
        if problem is not None:
            problems.append(problem)
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            problems.append(
                Finding(
                    "reference.duplicate",
                    str(path),
                    f"the same picture as {seen[digest].name}",
                    "replace it with a different photo of the face (another angle or light)",
                )
            )
        seen.setdefault(digest, path)
    return problems


def check_reference(path: Path) -> Finding | None:
    """The first problem of one reference file, or None when it passes."""
    where = str(path)
    if not path.is_file():
        return Finding("reference.missing", where, "no such file", "fix the path or add the file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        return Finding(
            "reference.too_large",
            where,
            f"{size / 1024 / 1024:.1f} MB is over the 10 MB limit",
            "save it as JPEG (quality 90) or scale it down to about 2000 px",
        )
    kind = sniff_format(path)
    if kind is None:
        return Finding(
            "reference.format",
            where,
            "not a PNG, JPEG or WebP picture (by its content, whatever its name says)",
            "convert it to PNG or JPEG",
        )
    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return Finding(
            "reference.unreadable",
            where,
            f"the {kind} picture cannot be decoded ({exc})",
            "export it again from the original; the file is truncated or damaged",
        )
    if min(width, height) < MIN_SHORT_SIDE:
        return Finding(
            "reference.too_small",
            where,
            f"{width}×{height} px: the short side is under {MIN_SHORT_SIDE} px",
            f"use a picture at least {MIN_SHORT_SIDE}×{MIN_SHORT_SIDE} px (the original photo, "
            "not a thumbnail)",
        )
    return None


def sniff_format(path: Path) -> str | None:
    """``PNG``, ``JPEG`` or ``WEBP`` from the file's first bytes; None for anything else."""
    with path.open("rb") as fh:
        head = fh.read(12)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def face_problems(face_checks: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Problems from ``CharpackFaceCheck`` UI entries: no face, or more than one face."""
    problems: list[Finding] = []
    for entry in face_checks:
        label, count = str(entry.get("label", "?")), int(entry.get("count", 0))
        if count == 0:
            problems.append(
                Finding(
                    "reference.no_face",
                    label,
                    "no face found",
                    "use a photo where the face is large, in focus and not covered (no "
                    "sunglasses, hands or hair over it)",
                )
            )
        elif count > 1:
            problems.append(
                Finding(
                    "reference.many_faces",
                    label,
                    f"{count} faces found; a reference must show one person",
                    "crop the picture to the character's face and shoulders",
                )
            )
    return problems


def _count_problem(paths: Sequence[Path]) -> Finding:
    where = str(paths[0].parent) if paths else "references/"
    if len(paths) < MIN_REFERENCES:
        return Finding(
            "reference.too_few",
            where,
            f"{len(paths)} face reference(s); at least {MIN_REFERENCES} are needed",
            f"add {MIN_REFERENCES - len(paths)} more photo(s) of the face from other angles",
        )
    return Finding(
        "reference.too_many",
        where,
        f"{len(paths)} face references; at most {MAX_REFERENCES} are used",
        f"keep the {MAX_REFERENCES} sharpest, most varied photos and remove the rest",
    )
