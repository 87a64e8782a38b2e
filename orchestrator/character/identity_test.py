"""The 5-shot identity test, and the two runs of it around a training (before/after).

Owns :data:`SHOTS` (one scene per hard case for likeness: portrait, full body, profile,
dramatic light, expression — the same scenes and seeds as ``examples/identity-test.yaml``) and
:func:`identity_pack`, which writes the test as a pack file for a character: the character block
of its ``character.yaml`` (with or without a LoRA), the character's defaults and identity
threshold, one attempt per shot (a test measures; it does not retry until it passes). The pack
files are written beside the pack folders they make (``identity/v<N>/before.yaml``), so
``charpack run identity/v1/after.yaml`` repeats a test by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..folder.integrity import atomic_write


@dataclass(frozen=True)
class Shot:
    name: str
    prompt: str
    seed: int


SHOTS: tuple[Shot, ...] = (
    Shot(
        "portrait",
        "head and shoulders portrait, neutral grey studio backdrop, soft window light, cream "
        "knit sweater",
        101,
    ),
    Shot(
        "full-body",
        "full body shot, standing on a boardwalk, denim jacket and white sneakers, overcast "
        "daylight",
        102,
    ),
    Shot(
        "profile",
        "side profile view looking out of a train window, travel scene, afternoon light",
        103,
    ),
    Shot(
        "dramatic-light",
        "portrait with dramatic low-key lighting, single hard light from the side, black "
        "turtleneck",
        104,
    ),
    Shot(
        "expression",
        "laughing candidly at a friend off camera, outdoor market, summer dress, bright daylight",
        105,
    ),
)


def rebased(paths: list[str], source_dir: Path, target_dir: Path) -> list[str]:
    """Relative paths written for ``source_dir``, rewritten for a file in ``target_dir``."""
    out = []
    for rel in paths:
        absolute = (source_dir / rel).resolve()
        out.append(Path(os.path.relpath(absolute, target_dir.resolve())).as_posix())
    return out


def character_block(
    raw: dict[str, Any], *, source_dir: Path, target_dir: Path, lora: dict[str, Any] | None
) -> dict[str, Any]:
    """The pack's character block for a pack file in ``target_dir``, its LoRA replaced."""
    character = dict(raw["character"])
    character["face_references"] = rebased(
        list(character["face_references"]), source_dir, target_dir
    )
    character.pop("lora", None)
    if lora is not None:
        character["lora"] = dict(lora)
    return character


def identity_pack(
    raw: dict[str, Any],
    *,
    name: str,
    source_dir: Path,
    target: Path,
    lora: dict[str, Any] | None,
) -> Path:
    """Write the 5-shot test for the character of ``raw`` (a pack file's data) to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    identity = dict(raw.get("identity") or {})
    identity["max_attempts"] = 1
    data: dict[str, Any] = {
        "version": raw.get("version", 1),
        "pack": name,
        "seed": raw.get("seed", 0),
        "character": character_block(
            raw, source_dir=source_dir, target_dir=target.parent, lora=lora
        ),
    }
    if raw.get("defaults"):
        data["defaults"] = raw["defaults"]
    data["identity"] = identity
    data["scenes"] = [{"name": s.name, "prompt": s.prompt, "seeds": [s.seed]} for s in SHOTS]
    header = (
        "# The 5-shot identity test, written by charpack character test; run it again with\n"
        f"# charpack run {target.name} --out {target.stem}\n"
    )
    text = (header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)).encode("utf-8")
    return atomic_write(target, lambda fh: fh.write(text), doing=f"write {target.name}")
