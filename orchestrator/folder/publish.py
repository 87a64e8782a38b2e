"""``charpack publish PACK_DIR``: copies of the accepted images with every metadata chunk removed.

ComfyUI and charpack's saver write the prompt, the whole workflow and the generation parameters
into each PNG (tEXt/zTXt/iTXt chunks, sometimes eXIf). A published picture must carry none of
it. This module copies each accepted image into ``<PACK_DIR>/publish/<scene>/<name>`` keeping
only the chunks that define the pixels and their colours, byte for byte: the compressed image
data is never decoded or re-encoded, so the pixels are identical and the copy is fast.

- PNG: keeps IHDR, PLTE, tRNS, IDAT, IEND and the colour chunks (gAMA, cHRM, sRGB, iCCP, cICP,
  mDCV, cLLI); drops every other chunk (text, eXIf, time, physical size, private chunks).
- JPEG: keeps JFIF (APP0), the ICC profile (APP2) and Adobe's colour transform (APP14); drops
  EXIF/XMP (APP1), IPTC (APP13), the other APPn and comments, and anything after the end marker.
- WebP: drops the EXIF and XMP chunks and clears their flags in VP8X.

It reads the manifest and the images; it never changes them.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import CharpackError
from .integrity import atomic_write, writable
from .manifest import Manifest
from .report import inside

log = logging.getLogger(__name__)

PUBLISH_DIR = "publish"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEEP = frozenset(
    {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP"}
    | {b"cICP", b"mDCV", b"cLLI"}
)
_COPY_BLOCK = 1 << 20


class PublishError(CharpackError):
    """An image cannot be published (unknown format, truncated or corrupt file)."""

    exit_code = 2


@dataclass
class PublishResult:
    """What :func:`publish` wrote; ``changed``: files whose sha256 differs from the manifest's."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    bytes_removed: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def publish(folder: Path, *, out_dir: Path | None = None) -> PublishResult:
    """Write metadata-free copies of every accepted image of the pack folder ``folder``."""
    manifest = Manifest.load(folder)
    target = out_dir or folder / PUBLISH_DIR
    result = PublishResult(out_dir=target)
    for entry in manifest:
        rel = entry.get("image")
        if entry.get("status") != "done" or not rel:
            continue
        source = inside(folder, str(rel))
        if not source.is_file():
            result.missing.append(str(rel))
            continue
        dest = target.joinpath(*Path(str(rel)).parts)
        # Nothing below the pack folder (or below --out) is written through a link.
        writable(folder if out_dir is None else out_dir, dest)
        digest, removed = strip_file(source, dest)
        result.written.append(dest)
        result.bytes_removed += removed
        expected = {
            f["path"]: f["sha256"] for a in entry.get("attempts") or [] for f in a.get("files", [])
        }
        if str(rel) in expected and expected[str(rel)] != digest:
            result.changed.append(str(rel))
    if result.missing:
        log.warning(
            "publish: %d accepted image(s) are missing from %s", len(result.missing), folder
        )
    return result


def strip_file(source: Path, dest: Path) -> tuple[str, int]:
    """Copy ``source`` to ``dest`` without metadata; returns (sha256 of source, bytes dropped)."""
    stripper = _STRIPPERS.get(source.suffix.lower())
    if stripper is None:
        raise PublishError(
            f"{source}: cannot publish {source.suffix or 'extension-less'} files — "
            "charpack publishes PNG, JPEG and WebP images"
        )
    readers: list[_HashingReader] = []

    def write(out: BinaryIO) -> None:
        with source.open("rb") as raw:  # an error reading it is raised as it is
            reader = _HashingReader(raw)
            readers.append(reader)
            stripper(reader, out, source)
            reader.drain()

    atomic_write(dest, write, doing="write the published copy")
    reader = readers[0]
    return reader.sha256.hexdigest(), reader.count - dest.stat().st_size


class _HashingReader:
    """Reads a file once, hashing everything (skipped bytes too) for the sha256 check."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def exact(self, n: int, source: Path) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise PublishError(f"{source}: the file is truncated — re-download it from the server")
        return data

    def copy(self, n: int, out: BinaryIO | None, source: Path) -> None:
        """Pass ``n`` bytes to ``out`` (or drop them when ``out`` is None), in blocks."""
        while n:
            block = self.exact(min(n, _COPY_BLOCK), source)
            if out is not None:
                out.write(block)
            n -= len(block)

    def drain(self) -> None:
        while self.read(_COPY_BLOCK):
            pass


def _strip_png(reader: _HashingReader, out: BinaryIO, source: Path) -> None:
    if reader.exact(8, source) != PNG_SIGNATURE:
        raise PublishError(f"{source}: not a PNG file — check the file or its extension")
    out.write(PNG_SIGNATURE)
    while True:
        head = reader.exact(8, source)
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise PublishError(f"{source}: corrupt PNG chunk — re-download the image")
        keep = kind in PNG_KEEP
        if keep:
            out.write(head)
        reader.copy(length + 4, out if keep else None, source)  # data + CRC, unchanged
        if kind == b"IEND":
            return  # anything after IEND is not part of the image


def _strip_jpeg(reader: _HashingReader, out: BinaryIO, source: Path) -> None:
    if reader.exact(2, source) != b"\xff\xd8":
        raise PublishError(f"{source}: not a JPEG file — check the file or its extension")
    out.write(b"\xff\xd8")
    while True:
        marker = reader.exact(2, source)
        while marker[1] == 0xFF:  # fill bytes before a marker
            marker = marker[1:] + reader.exact(1, source)
        if marker[0] != 0xFF:
            raise PublishError(f"{source}: corrupt JPEG marker — re-download the image")
        code = marker[1]
        if code == 0xD9:
            out.write(marker)
            return
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # markers without a length field
            out.write(marker)
            continue
        size = reader.exact(2, source)
        length = struct.unpack(">H", size)[0] - 2
        body = reader.exact(length, source) if 0xE0 <= code <= 0xEF or code == 0xFE else None
        if body is not None and not _keep_app(code, body):  # comments and metadata APPn
            continue
        out.write(marker + size)
        if body is not None:
            out.write(body)
        else:
            reader.copy(length, out, source)
        if code == 0xDA:  # start of scan: entropy-coded data up to the end marker follows
            rest = _read_rest(reader)
            end = rest.rfind(b"\xff\xd9")
            out.write(rest if end < 0 else rest[: end + 2])
            return


def _keep_app(code: int, body: bytes) -> bool:
    return (
        (code == 0xE0 and body.startswith(b"JFIF\0"))
        or (code == 0xE2 and body.startswith(b"ICC_PROFILE\0"))
        or (code == 0xEE and body.startswith(b"Adobe"))
    )


def _read_rest(reader: _HashingReader) -> bytes:
    parts = []
    while block := reader.read(_COPY_BLOCK):
        parts.append(block)
    return b"".join(parts)


def _strip_webp(reader: _HashingReader, out: BinaryIO, source: Path) -> None:
    head = reader.exact(12, source)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise PublishError(f"{source}: not a WebP file — check the file or its extension")
    data = _read_rest(reader)
    chunks: list[bytes] = []
    pos = 0
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + size > len(data):
            raise PublishError(f"{source}: the file is truncated — re-download it")
        chunk = data[pos : pos + 8 + size] + (b"\0" if size & 1 else b"")  # chunks pad to even
        pos += 8 + size + (size & 1)
        if kind in (b"EXIF", b"XMP "):
            continue
        if kind == b"VP8X":  # flags byte: clear "has EXIF" (0x08) and "has XMP" (0x04)
            chunk = chunk[:8] + bytes([chunk[8] & ~0x0C & 0xFF]) + chunk[9:]
        chunks.append(chunk)
    body = b"WEBP" + b"".join(chunks)
    out.write(b"RIFF" + struct.pack("<I", len(body)) + body)


_STRIPPERS: dict[str, Callable[[_HashingReader, BinaryIO, Path], None]] = {
    ".png": _strip_png,
    ".jpg": _strip_jpeg,
    ".jpeg": _strip_jpeg,
    ".webp": _strip_webp,
}
