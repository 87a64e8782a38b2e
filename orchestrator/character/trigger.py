"""The trigger token of a character LoRA: a proposal, and warnings about weak choices.

A trigger should be a token the base model has no meaning for, so the LoRA fills it with the
character instead of fighting a prior: the earlier training learned that a common word, the
character's own name included, works worse than a rare token. The proposal is made of
consonants only (no a, e, i, o, u, y), which CLIP splits into rare sub-word pieces and which is
not an English word; it starts with the name's consonants so a person can still tell whose it is.

Public API::

    propose_trigger(name: str, *, taken: Iterable[str] = (), length: int = 5) -> str
    trigger_warnings(trigger: str, *, name: str = "") -> list[str]

A pack's ``trigger`` may be the token plus a class word (``"vkrtz woman"``); the warnings judge
the words together: a class word is fine as long as one word is rare.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

CONSONANTS = "bcdfghjklmnpqrstvwxz"
MIN_LENGTH = 4
# Vowel-free "words" that exist anyway (interjections, Welsh loans): never proposed.
_VOWELLESS_WORDS = frozenset(
    "brr brrr crwth cwm cwtch hm hmm mm nth pfft psst sh shh tsk tsktsk zzz".split()
)
# Frequent English words and the words prompts are made of; a trigger made only of these has a
# strong prior in the text encoder.
COMMON_WORDS = frozenset(
    """
    a about after all also an and any are as at back be because been but by can come could day
    do even first for from get give go good have he her him his how i if in into is it its just
    know like look make man me more most my new no not now of on one only or other our out over
    people say see she so some take than that the their them then there these they think this
    time to two up us use want way we well what when which who will with work would year you
    your woman women girl boy lady guy person face photo picture portrait model character style
    beautiful pretty cute young old smile hair eyes body skin red blue green black white gold
    star rose lily grace hope joy sky sun moon love angel baby queen king princess prince
    fashion travel studio light city beach street test token trigger lora sks ohwx
    """.split()
)


def propose_trigger(name: str, *, taken: Iterable[str] = (), length: int = 5) -> str:
    """A rare, vowel-free token of ``length`` letters for the character ``name``.

    Deterministic: the same name gives the same token. It starts with up to three of the
    name's consonants and is filled from a hash of the name; tokens in ``taken`` (other
    characters' triggers) and vowel-free words are skipped.
    """
    if not 4 <= length <= 12:
        raise ValueError(f"a trigger of {length} letters: use 4 to 12 letters")
    used = {t.lower() for t in taken}
    stem = _dedupe([c for c in _ascii(name) if c in CONSONANTS])[:3]
    for attempt in range(1000):
        digest = hashlib.sha256(f"{name}\0{attempt}".encode()).digest()
        fill = [CONSONANTS[b % len(CONSONANTS)] for b in digest]
        token = "".join(_dedupe([*stem, *fill])[:length])
        if token not in used and token not in _VOWELLESS_WORDS and not _triple(token):
            return token
    raise ValueError(f"no free trigger for {name!r}: pass a longer length or fewer taken tokens")


def trigger_warnings(trigger: str, *, name: str = "") -> list[str]:
    """Why ``trigger`` is a weak choice, one sentence each with the fix; [] when it is fine."""
    words = [w for w in re.split(r"[\s,]+", trigger.strip().lower()) if w]
    better = f"use a rare token such as {propose_trigger(name or trigger or 'character')!r}"
    if not words:
        return [f"no trigger word: the LoRA is then always on — {better}"]
    warnings: list[str] = []
    parts = [p for w in words for p in re.split(r"[^a-z0-9]+", _ascii(w)) if p]
    if len(words) > 1 and not any(_rare(w) for w in words):
        warnings.append(f"{trigger!r} is only common words — {better}")
    elif len(words) == 1 and not _rare(words[0]):
        warnings.append(f"{trigger!r} is a common word the model already knows — {better}")
    token = max(words, key=lambda w: (_rare(w), len(w)))
    if len(re.sub(r"[^a-z0-9]", "", _ascii(token))) < MIN_LENGTH:
        warnings.append(
            f"{token!r} is shorter than {MIN_LENGTH} letters and collides with common tokens "
            f"— {better}"
        )
    plain = _ascii(name)
    if plain and (plain in words or plain in parts):
        warnings.append(
            f"{trigger!r} contains the character's name {name!r}, whose meaning in the base "
            f"model leaks into the LoRA — {better}"
        )
    return warnings


def _rare(word: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", _ascii(word)) if p]
    return bool(parts) and not all(p in COMMON_WORDS or p.isdigit() for p in parts)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in folded if c.isascii())


def _dedupe(letters: list[str]) -> list[str]:
    """Letters without immediate repeats (``ss`` reads as one sound and one token piece)."""
    out: list[str] = []
    for letter in letters:
        if not out or out[-1] != letter:
            out.append(letter)
    return out


def _triple(token: str) -> bool:
    return any(token[i] == token[i + 1] == token[i + 2] for i in range(len(token) - 2))
