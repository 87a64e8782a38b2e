"""Training captions written from a pack's own prompts: ``"<trigger>, <short description>"``.

The pack file already says what each scene shows, so no captioning model is needed (training.md
§5). A caption keeps what varies between pictures — clothing, pose, setting, light — and drops
what should bind to the trigger or says nothing about the picture: the pack's prompt prefix and
suffix, the character's attributes (hair, eyes: fixed traits the LoRA must learn as the trigger),
the trigger itself where the prompt already has it, quality words (``masterpiece``, ``8k``,
``85mm lens``) and prompt weights (``(word:1.2)`` → ``word``).

Public API::

    caption_for(prompt, trigger, *, prefix="", suffix="", attributes=(), max_words=40) -> str
    Captioner.from_character(block: Mapping[str, Any]) -> Captioner   # a pack's character block
    Captioner.caption(prompt: str) -> str
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_WORDS = 40  # well inside CLIP's 77 tokens, with room for the trigger
QUALITY_WORDS = (
    "raw photo",
    "masterpiece",
    "best quality",
    "high quality",
    "highest quality",
    "ultra detailed",
    "highly detailed",
    "extremely detailed",
    "photorealistic",
    "ultra realistic",
    "hyperrealistic",
    "realistic",
    "sharp focus",
    "8k",
    "4k",
    "uhd",
    "hdr",
    "dslr",
    "film grain",
    "soft film grain",
    "natural skin texture",
    "detailed skin",
    "award winning photo",
    "professional photo",
)
_LENS = re.compile(r"^\d+\s?mm( lens)?$")
_WEIGHT = re.compile(r"\(([^():]+)(?::[0-9.]+)?\)")


def caption_for(
    prompt: str,
    trigger: str,
    *,
    prefix: str = "",
    suffix: str = "",
    attributes: Iterable[str] = (),
    max_words: int = MAX_WORDS,
) -> str:
    """The caption of a picture made from ``prompt`` (a scene prompt or a whole positive prompt)."""
    drop = {_key(p) for p in _parts(prefix) + _parts(suffix) + _parts(trigger)}
    drop |= {_key(a) for value in attributes for a in _parts(value)}
    kept: list[str] = []
    for part in _parts(prompt):
        key = _key(part)
        if (
            key in drop
            or key in QUALITY_WORDS
            or _LENS.match(key)
            or key in {_key(k) for k in kept}
        ):
            continue
        kept.append(part)
    description = _clip_words(", ".join(kept), max_words)
    head = trigger.strip().strip(",").strip()
    return ", ".join(p for p in (head, description) if p)


@dataclass(frozen=True)
class Captioner:
    """Captions for one character: its trigger and the prompt parts captions leave out."""

    trigger: str
    prefix: str = ""
    suffix: str = ""
    attributes: tuple[str, ...] = ()
    max_words: int = MAX_WORDS

    @classmethod
    def from_character(cls, block: Mapping[str, Any], *, trigger: str | None = None) -> Captioner:
        """From a pack file's ``character`` mapping; ``trigger`` overrides the block's."""
        attributes = block.get("attributes") or {}
        return cls(
            trigger=str(block.get("trigger", "") if trigger is None else trigger),
            prefix=str(block.get("prompt_prefix", "")),
            suffix=str(block.get("prompt_suffix", "")),
            attributes=tuple(str(v) for v in dict(attributes).values()),
        )

    def caption(self, prompt: str) -> str:
        return caption_for(
            prompt,
            self.trigger,
            prefix=self.prefix,
            suffix=self.suffix,
            attributes=self.attributes,
            max_words=self.max_words,
        )


def _parts(text: str) -> list[str]:
    """Comma-separated parts with prompt weights removed and whitespace collapsed."""
    plain = _WEIGHT.sub(r"\1", text)
    plain = plain.replace("(", "").replace(")", "").replace("[", "").replace("]", "")
    parts = (re.sub(r"\s+", " ", p).strip(" .;") for p in re.split(r"[,\n]", plain))
    return [p for p in parts if p]


def _key(part: str) -> str:
    return part.lower()


def _clip_words(text: str, max_words: int) -> str:
    words = text.split(" ")
    if len(words) <= max_words:
        return text
    return " ".join(words[:max_words]).rstrip(",")
