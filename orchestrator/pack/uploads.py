"""The files a pack uploads (face references, init images, pose images): their server-side names
and what such a picture may be.

Names are derived from the file's content (sha256), so the same bytes get the same name on every
server and in every run: ComfyUI keeps an identical file under its name, uploads are deduplicated,
and ``charpack plan`` can write the exact payloads before anything is uploaded. A picture must be
a PNG, JPEG or WebP of at most :data:`MAX_PICTURE_PIXELS` pixels and :data:`MAX_PICTURE_BYTES`,
checked from its header before anything is decoded (:func:`read_picture`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import CharpackError

SUBFOLDER = "charpack"


@dataclass(frozen=True)
class Upload:
    """A local file and the name it has in the server's input folder."""

    path: Path
    sha256: str
    subfolder: str
    filename: str

    @property
    def image_value(self) -> str:
        """The value LoadImage's ``image`` input takes for this file."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_for(path: Path) -> Upload:
    """The content-derived upload name of ``path`` (``charpack/<sha256[:20]>.<ext>``)."""
    sha = file_sha256(path)
    suffix = path.suffix.lower() or ".png"
    return Upload(path=path, sha256=sha, subfolder=SUBFOLDER, filename=f"{sha[:20]}{suffix}")


# --- pictures: what a face reference, init image or pose reference may be ---------------------

MAX_PICTURE_PIXELS = 64_000_000  # 8000x8000; a 48-megapixel phone photo fits
MAX_PICTURE_BYTES = 256 * 1024 * 1024
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class Picture:
    format: str
    width: int
    height: int


class PictureRefused(CharpackError, ValueError):
    """A picture file that is not a readable PNG/JPEG/WebP within the limits; the message
    completes a sentence about the file and ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}")


def read_picture(path: Path) -> Picture:
    """The format and size of the picture at ``path``, read from its header before anything is
    decoded (a 20000x20000 PNG is 40 KB on disk and 1.2 GB decoded), then its structure checked
    (``verify``: chunk CRCs for PNG). Raises :class:`PictureRefused`."""
    from PIL import Image

    size = path.stat().st_size
    if size > MAX_PICTURE_BYTES:
        raise PictureRefused(
            f"is {size / 2**20:.0f} MiB; a picture may be at most {MAX_PICTURE_BYTES // 2**20} MiB",
            "save it smaller (a face reference needs no more than about 2048 px)",
        )
    Image.init()
    with path.open("rb") as fh:
        prefix = fh.read(16)
        for name in PICTURE_FORMATS:
            factory, accept = Image.OPEN[name]
            if accept is not None and not _truthy(accept(prefix)):
                continue
            fh.seek(0)
            try:
                # The format's own header reader, without Image.open's decompression-bomb
                # check: that check raises for large sizes before saying what the size is.
                picture = factory(fh, str(path))
            except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError):
                break
            width, height = picture.size
            if width * height > MAX_PICTURE_PIXELS:
                raise PictureRefused(
                    f"is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); the "
                    f"limit is {MAX_PICTURE_PIXELS // 1_000_000} megapixels",
                    "scale it down (e.g. to 4096 px on the longer side) and save it again",
                )
            try:
                picture.verify()
            except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError):
                break
            return Picture(format=name, width=width, height=height)
    raise PictureRefused(
        "cannot be read as a PNG, JPEG or WebP image", "re-export it as PNG or JPEG"
    )


def _truthy(answer: object) -> bool:
    # A format's accept() answers True/False, or a string that explains a near miss.
    return bool(answer) and not isinstance(answer, str)
