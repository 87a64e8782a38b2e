"""Registering a trained LoRA in the character's pack file, keeping the file the user wrote.

:func:`register_lora` rewrites only the ``character.lora`` block of ``character.yaml`` (or adds
one after the character's last field): comments, order and every other line stay as written.
The file as it was is kept as ``training/v<N>/character.before.yaml``; the new text is written
to a temporary file, loaded with :func:`charpack.pack.packfile.load_pack` (so a registration
never leaves a pack file charpack refuses), then renamed over the old one.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import CharacterError, PackError
from ..folder.integrity import atomic_write
from ..pack.packfile import load_pack

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class Registration:
    pack_file: Path
    lora_name: str  # as the pods' LoraLoader names it (relative to models/loras)
    sha256: str
    strength: float
    backup: Path  # the pack file as it was before


def lora_block(indent: str, *, name: str, sha256: str, strength: float, version: int) -> str:
    step = "  "
    return (
        f"{indent}lora:  # trained by charpack (version {version}); the previous block is in "
        f"training/v{version}/character.before.yaml\n"
        f"{indent}{step}file: {name}\n"
        f"{indent}{step}strength: {strength}\n"
        f"{indent}{step}sha256: {sha256}\n"
    )


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The index after the line holding ``index - 1`` (its newline included)."""
    if index > 0 and text[index - 1] == "\n":
        return index
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def _content_end(node: yaml.Node) -> int:
    """Where ``node``'s own text ends: a block collection's end mark is the next token's start
    (the following key's line), so it ends where its last scalar or flow value does."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _content_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _content_end(node.value[-1])
    return int(node.end_mark.index)


def replace_lora_block(
    text: str, *, name: str, sha256: str, strength: float, version: int
) -> str:
    """``text`` with the character's ``lora`` block replaced (or added)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise CharacterError("the pack file is not a mapping; it cannot hold a character")
    character = next(
        (v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "character"),
        None,
    )
    if not isinstance(character, yaml.MappingNode) or character.flow_style or not character.value:
        raise CharacterError(
            "character.yaml: the character block must be a block mapping ('character:' then "
            "indented 'name: ...' lines) for charpack to register the LoRA in it"
        )
    first_key = character.value[0][0]
    indent = " " * first_key.start_mark.column
    block = lora_block(indent, name=name, sha256=sha256, strength=strength, version=version)
    for key, value in character.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "lora":
            start = _line_start(text, key.start_mark.index)
            end = _line_end(text, _content_end(value))
            return text[:start] + block + text[end:]
    last_value = character.value[-1][1]
    end = _line_end(text, _content_end(last_value))
    if end == len(text) and not text.endswith("\n"):
        return text + "\n" + block
    return text[:end] + block + text[end:]


def register_lora(
    pack_file: Path,
    *,
    lora_name: str,
    sha256: str,
    version: int,
    backup_dir: Path,
    strength: float = 0.7,
) -> Registration:
    """Point ``character.lora`` of ``pack_file`` at ``lora_name`` (see the module docstring)."""
    if not _HEX64.match(sha256):
        raise ValueError(f"sha256 must be 64 lower-case hex digits, not {sha256!r}")
    if not _SAFE_NAME.match(lora_name) or ".." in lora_name.split("/"):
        raise ValueError(f"not a LoRA name the pods can load: {lora_name!r}")
    text = pack_file.read_text(encoding="utf-8")
    new_text = replace_lora_block(
        text, name=lora_name, sha256=sha256, strength=strength, version=version
    )
    backup_dir.mkdir(parents=True, exist_ok=True)
    backup = backup_dir / "character.before.yaml"
    if not backup.exists():  # a second registration of one version keeps the first original
        shutil.copy2(pack_file, backup)
    data = new_text.encode("utf-8")
    # Checked first as a sibling (relative paths resolve the same), then written in place.
    check = pack_file.with_name(f".{pack_file.name}.check.yaml")
    try:
        atomic_write(check, lambda fh: fh.write(data), doing=f"check {pack_file.name}")
        try:
            load_pack(check)
        except PackError as exc:
            raise CharacterError(
                [f"{pack_file}: registering the LoRA would make the pack file invalid (left "
                 "unchanged):", *exc.problems]  # fmt: skip
            ) from None
    finally:
        check.unlink(missing_ok=True)
    atomic_write(pack_file, lambda fh: fh.write(data), doing=f"register the LoRA in {pack_file}")
    return Registration(pack_file, lora_name, sha256, strength, backup)
