"""The bootstrap pack: on-identity training images when only the face references exist.

Owns the shot types and lights a character's dataset should cover (:data:`SHOT_TYPES`,
:data:`LIGHTS`), :func:`bootstrap_pack` (a pack file, as a dict: the character without LoRA,
FaceID + InstantID on, one scene per shot type × light, neutral fashion, travel and lifestyle
prompts) and :func:`shot_of` (a scene's shot type from its name or prompt, for any pack).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import catalog

from .layout import slug
from .trigger import COMMON_WORDS

SHOT_TYPES: dict[str, str] = {
    "close-up": "close-up portrait, head and shoulders",
    "half-body": "half body shot from the waist up",
    "full-body": "full body shot, standing, head to toe in frame",
    "profile": "side profile view",
    "three-quarter": "three-quarter view, head turned slightly to the side",
}
LIGHTS: dict[str, str] = {
    "daylight": "on a quiet city street, soft overcast daylight",
    "studio": "in a photo studio, plain grey backdrop, softbox lighting",
    "golden-hour": "in a park at golden hour, warm low sunlight",
    "night-interior": "in a hotel lobby at night, warm lamp light",
}
OUTFITS = (
    "linen shirt and light trousers",
    "black turtleneck",
    "camel trench coat",
    "denim jacket over a white t-shirt",
    "navy blazer",
    "knit sweater",
    "summer dress",
)
# Words in a scene name or prompt that tell its shot type, for packs not made by bootstrap_pack.
_SHOT_WORDS = (
    ("profile", "profile"),
    ("three-quarter", "three-quarter"),
    ("three quarter", "three-quarter"),
    ("full body", "full-body"),
    ("full-body", "full-body"),
    ("half body", "half-body"),
    ("waist up", "half-body"),
    ("close-up", "close-up"),
    ("close up", "close-up"),
    ("portrait", "close-up"),
    ("head and shoulders", "close-up"),
)


# --- 1. the bootstrap pack ------------------------------------------------------------------


def bootstrap_pack(
    pack: Mapping[str, Any],
    *,
    source_dir: Path | None = None,
    per_scene: int = 2,
    seed: int | None = None,
) -> dict[str, Any]:
    """The bootstrap pack of the character of the pack file ``pack`` (``character.yaml``).

    The character keeps its checkpoint, references, attributes and prompt parts but loses its
    LoRA (there is none yet, or it is the one being replaced) and the rare part of its trigger
    (meaningless without the LoRA; class words such as "woman" stay). ``source_dir``: the
    folder of ``character.yaml``; relative face references are made absolute so the pack file
    can be written anywhere. 20 scenes (5 shot types × 4 lights) of ``per_scene`` images each.
    """
    if per_scene < 1:
        raise ValueError(f"per_scene = {per_scene}: a bootstrap pack needs ≥ 1 image per scene")
    character = dict(pack["character"])
    character.pop("lora", None)
    words = str(character.get("trigger", "")).split()
    character["trigger"] = " ".join(w for w in words if w.lower() in COMMON_WORDS)
    if source_dir is not None:
        character["face_references"] = [
            str(source_dir / ref) if not Path(ref).is_absolute() else ref
            for ref in character.get("face_references", [])
        ]
    defaults = dict(pack.get("defaults") or {})
    stages = dict(defaults.get("stages") or {})
    for stage in (catalog.STAGE_FACEID, catalog.STAGE_INSTANTID):
        current = stages.get(stage)
        stages[stage] = {**(current if isinstance(current, dict) else {}), "enabled": True}
    defaults["stages"] = stages
    identity = {**dict(pack.get("identity") or {}), "enabled": True}
    scenes = []
    for i, (shot, framing) in enumerate(SHOT_TYPES.items()):
        for j, (light, place) in enumerate(LIGHTS.items()):
            outfit = OUTFITS[(i + 2 * j) % len(OUTFITS)]
            scenes.append(
                {
                    "name": f"{shot}-{light}",
                    "prompt": f"{framing}, {outfit}, {place}",
                    "count": per_scene,
                }
            )
    return {
        "version": int(pack.get("version", 1)),
        "pack": f"{slug(str(character.get('name', 'character')))}-bootstrap",
        "seed": int(pack.get("seed", 0)) if seed is None else seed,
        "character": character,
        "defaults": defaults,
        "identity": identity,
        "scenes": scenes,
    }


def shot_of(scene: str, prompt: str = "") -> str:
    """The shot type of a scene: from its name (``close-up-daylight``), else its prompt's
    words (``full body``, ``profile``), else the scene name itself."""
    for shot in SHOT_TYPES:
        if scene == shot or scene.startswith(f"{shot}-"):
            return shot
    for text in (scene.lower().replace("_", " "), prompt.lower()):
        for words, shot in _SHOT_WORDS:
            if words in text:
                return shot
    return scene
