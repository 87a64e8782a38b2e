"""Server-side names for the files a pack uploads (face references, init images, pose images).

Names are derived from the file's content (sha256), so the same bytes get the same name on every
server and in every run: ComfyUI keeps an identical file under its name, uploads are deduplicated,
and ``charpack plan`` can write the exact payloads before anything is uploaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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
