"""Safe, deterministic output paths for saved pack images.

Owns the rule that no pack, scene or image name can write outside ComfyUI's output folder:
each name is one plain path component (no separators, no ``.``/``..``, no control characters,
no drive letters, not absurdly long), and the joined folder is checked to resolve inside the
output folder even through symlinks. Names are refused, never silently rewritten: a rewritten
name could collide with another job's file, and the orchestrator must find the file under the
name it asked for. Standard library only; it does not create folders or write files.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

MAX_NAME_LENGTH = 120
_FORBIDDEN_CHARS = frozenset('/\\:*?"<>|')
# Windows device names: refused on every OS so a pack folder copies to any machine.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


class UnsafeName(ValueError):
    """A pack, scene or image name that could escape the output folder or break on disk."""


def check_name(value: object, *, field: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise :class:`UnsafeName`.

    ``field`` names the input (``pack``, ``scene``, ``name``) in the message.
    """
    fix = f"use letters, digits, spaces, '-', '_' or '.' in {field!r}, e.g. 'summer-lookbook'"
    if not isinstance(value, str) or not value.strip():
        raise UnsafeName(f"{field} is empty; {fix}")
    if value != value.strip():
        raise UnsafeName(f"{field} {value!r} starts or ends with whitespace; {fix}")
    if value in (".", "..") or set(value) == {"."}:
        raise UnsafeName(f"{field} {value!r} is a relative folder reference; {fix}")
    bad = sorted({c for c in value if c in _FORBIDDEN_CHARS})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise UnsafeName(
            f"{field} {value!r} contains {shown} (a path separator or reserved character); {fix}"
        )
    control = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if control:
        raise UnsafeName(
            f"{field} {value!r} contains control characters "
            f"({', '.join(f'U+{ord(c):04X}' for c in control)}); {fix}"
        )
    if value.endswith("."):
        raise UnsafeName(f"{field} {value!r} ends with '.'; {fix}")
    if value.split(".")[0].lower() in _RESERVED:
        raise UnsafeName(f"{field} {value!r} is a reserved device name on Windows; {fix}")
    if len(value) > MAX_NAME_LENGTH:
        raise UnsafeName(
            f"{field} is {len(value)} characters long; keep it within {MAX_NAME_LENGTH}"
        )
    return value


@dataclass(frozen=True)
class PackPaths:
    """Where one saved image and its sidecar go; ``subfolder`` is relative to the output dir."""

    folder: str
    subfolder: str
    stem: str

    @property
    def png(self) -> str:
        return os.path.join(self.folder, self.stem + ".png")

    @property
    def sidecar(self) -> str:
        return os.path.join(self.folder, self.stem + ".json")

    @property
    def png_name(self) -> str:
        return self.stem + ".png"

    @property
    def sidecar_name(self) -> str:
        return self.stem + ".json"


def image_stem(name: str, *, index: int, batch_size: int) -> str:
    """``name`` for a single image; ``name_00``, ``name_01`` … for the images of a batch."""
    return name if batch_size == 1 else f"{name}_{index:02d}"


def pack_paths(
    output_dir: str, *, pack: str, scene: str, name: str, index: int = 0, batch_size: int = 1
) -> PackPaths:
    """Checked paths for ``output/<pack>/<scene>/<name>.png`` (and ``.json``)."""
    check_name(pack, field="pack")
    check_name(scene, field="scene")
    check_name(name, field="name")
    root = os.path.realpath(output_dir)
    folder = os.path.join(root, pack, scene)
    # A symlinked pack or scene folder could still point elsewhere: check where it resolves.
    resolved = os.path.realpath(folder)
    if os.path.commonpath([root, resolved]) != root:
        raise UnsafeName(
            f"output folder {pack}/{scene} resolves to {resolved}, outside the output folder "
            f"{root}; remove that symlink or choose another pack/scene name"
        )
    stem = image_stem(name, index=index, batch_size=batch_size)
    return PackPaths(folder=folder, subfolder=f"{pack}/{scene}", stem=stem)
