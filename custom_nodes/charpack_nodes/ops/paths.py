"""Safe, deterministic output paths for saved pack images.

Owns the rule that no pack, scene or image name can write outside ComfyUI's output folder:
each name is one plain path component that every target file system keeps as written (the rule
is ``pipelines/names.py``, which the pack validator applies too, so a name ``charpack validate``
accepts is never refused here), and the joined folder is checked to resolve inside the
output folder even through symlinks. Names are refused, never silently rewritten: a rewritten
name could collide with another job's file, and the orchestrator must find the file under the
name it asked for. The editor previews of ``CharpackSavePack`` follow the same rule inside
ComfyUI's temp folder (:func:`preview_paths`). Standard library only; it does not create folders
or write files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..pipelines.names import MAX_NAME_BYTES, name_problem
from ..pipelines.params import shown

MAX_NAME_LENGTH = MAX_NAME_BYTES  # the limit is in UTF-8 bytes (one rule: pipelines/names.py)


class UnsafeName(ValueError):
    """A pack, scene or image name that could escape the output folder or break on disk."""


def check_name(value: object, *, field: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise :class:`UnsafeName`.

    ``field`` names the input (``pack``, ``scene``, ``name``) in the message. The rule is
    :func:`charpack_nodes.pipelines.names.name_problem`, the one the pack validator applies.
    """
    problem = name_problem(value)
    if problem is None:
        assert isinstance(value, str)
        return value
    if problem.startswith("is empty"):
        subject = field
    elif "bytes long" in problem:
        subject = f"{field} {shown(value, 40)}"
    else:
        subject = f"{field} {shown(value)}"
    fix = f"use letters, digits, spaces, '-', '_' or '.' in {field!r}, e.g. 'summer-lookbook'"
    raise UnsafeName(f"{subject} {problem}; {fix}")


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


PREVIEW_FOLDER = "charpack"  # previews go to <temp>/charpack/<pack>/<scene>/


def _checked_folder(root_dir: str, *parts: str, what: str) -> tuple[str, str]:
    """``root_dir/<parts>`` (absolute) and its subfolder relative to ``root_dir``; refused when it
    resolves outside ``root_dir`` (a symlinked pack or scene folder could point elsewhere)."""
    root = os.path.realpath(root_dir)
    folder = os.path.join(root, *parts)
    resolved = os.path.realpath(folder)
    subfolder = "/".join(parts)
    if os.path.commonpath([root, resolved]) != root:
        raise UnsafeName(
            f"{what} folder {subfolder} resolves to {resolved}, outside the {what} folder "
            f"{root}; remove that symlink or choose another pack/scene name"
        )
    return folder, subfolder


def pack_paths(
    output_dir: str, *, pack: str, scene: str, name: str, index: int = 0, batch_size: int = 1
) -> PackPaths:
    """Checked paths for ``output/<pack>/<scene>/<name>.png`` (and ``.json``)."""
    check_name(pack, field="pack")
    check_name(scene, field="scene")
    check_name(name, field="name")
    folder, subfolder = _checked_folder(output_dir, pack, scene, what="output")
    stem = image_stem(name, index=index, batch_size=batch_size)
    return PackPaths(folder=folder, subfolder=subfolder, stem=stem)


def preview_paths(temp_dir: str, *, pack: str, scene: str, stem: str) -> PackPaths:
    """Where an editor preview goes: ``<temp>/charpack/<pack>/<scene>/<stem>.png`` (``pack`` and
    ``scene`` are checked by :func:`pack_paths` first; ``stem`` names the prompt)."""
    folder, subfolder = _checked_folder(temp_dir, PREVIEW_FOLDER, pack, scene, what="temp")
    return PackPaths(folder=folder, subfolder=subfolder, stem=stem)
