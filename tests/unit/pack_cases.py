"""Broken pack files and the exact message each must produce (shared by the pack tests)."""

from __future__ import annotations

import copy
from typing import Any

VALID: dict[str, Any] = {
    "version": 1,
    "pack": "ava-test",
    "seed": 11,
    "character": {
        "name": "Ava",
        "checkpoint": "bigLoveXL.safetensors",
        "lora": {"file": "character_lora.safetensors", "strength": 0.7},
        "trigger": "ava_cp woman",
        "face_references": ["faces/front.png"],
        "attributes": {"hair": "auburn hair", "eyes": "green eyes"},
        "prompt_prefix": "RAW photo",
        "prompt_suffix": "85mm lens",
    },
    "defaults": {"cfg": 4.0, "stages": {"face_detailer": {"denoise": 0.4}}},
    "identity": {"threshold": 0.45, "max_attempts": 2},
    "scenes": [
        {"name": "cafe", "prompt": "at a street cafe, linen shirt", "count": 2},
        {"name": "beach", "prompt": "on a beach at sunset, summer dress", "seeds": [5, 6]},
    ],
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    """VALID with the dotted ``path`` set to ``value`` (or deleted when value is DELETE)."""
    data = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(leaf) if leaf.isdigit() else leaf
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


DELETE = object()
