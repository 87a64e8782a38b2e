"""The curation file: the user's hand-pick of training images, or exclusions.

Owns ``curation.yaml`` (:func:`load_curation`: every problem reported at once, paths relative
to the file) and :func:`curate` (exactly the picked images, from any pack folder or loose
pictures with their own captions; or the automatic choice without the excluded ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from charpack_nodes.pipelines.scene import IDENTITY_THRESHOLD

from ..errors import CharacterError
from ..folder.manifest import Manifest
from .candidates import DEFAULT_TARGET, Candidate, Choice, collect_candidates, select

# --- the curation file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    image: Path  # absolute
    caption: str | None = None


@dataclass(frozen=True)
class Curation:
    """A ``curation.yaml``: hand-picked images (then only those), or exclusions, or both."""

    path: Path
    picks: tuple[Pick, ...] = ()
    exclude: tuple[Path, ...] = ()


def load_curation(path: Path) -> Curation:
    """Read ``curation.yaml``; every problem (file and fix) is raised together."""
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CharacterError(f"{where}: cannot be read ({exc}) — fix the YAML") from None
    if isinstance(data, list):
        data = {"images": data}
    if not isinstance(data, dict) or not set(data) <= {"images", "exclude"} or not data:
        raise CharacterError(
            f"{where}: must hold 'images:' (a list of pictures to train on) and/or 'exclude:' "
            "(pictures to leave out) — see docs/character.md"
        )
    base, problems = path.parent, []
    picks: list[Pick] = []
    for n, item in enumerate(data.get("images") or []):
        entry = {"image": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            problems.append(
                f"{where}: images[{n}]: write a path, or 'image: <path>' with an "
                "optional 'caption: <text>'"
            )
            continue
        caption = entry.get("caption")
        if caption is not None and not isinstance(caption, str):
            problems.append(f"{where}: images[{n}].caption: must be text — put it in quotes")
            continue
        image = _resolve(base, entry["image"])
        if not image.is_file():
            problems.append(
                f"{where}: images[{n}]: {image} does not exist — fix the path "
                f"(paths are relative to {base})"
            )
            continue
        picks.append(Pick(image, caption))
    exclude: list[Path] = []
    for n, item in enumerate(data.get("exclude") or []):
        if not isinstance(item, str):
            problems.append(f"{where}: exclude[{n}]: write the path of a picture")
            continue
        exclude.append(_resolve(base, item))
    if problems:
        raise CharacterError(problems)
    return Curation(path, tuple(picks), tuple(exclude))


def curate(
    curation: Curation,
    candidates: Sequence[Candidate],
    *,
    target: int = DEFAULT_TARGET,
    threshold: float | None = None,
) -> list[Choice]:
    """The choice under a curation file. With picks: exactly those, in the file's order, then
    every other candidate as not picked. Without: :func:`select` over the candidates not
    excluded, the excluded ones recorded as such.

    A pick that no given pack folder lists is looked up in the pack folder above it (its
    manifest gives the scene prompt for the caption); a pick no manifest knows needs a caption.
    """
    if not curation.picks:
        dropped = set(curation.exclude)
        kept = [c for c in candidates if c.image not in dropped]
        verdicts = iter(select(kept, target=target, threshold=threshold))  # in kept's order
        return [
            next(verdicts)
            if c.image not in dropped
            else Choice(c, False, "excluded", f"excluded in {curation.path.name}")
            for c in candidates
        ]
    known = {c.image: c for c in candidates}
    problems: list[str] = []
    chosen: list[Choice] = []
    for pick in curation.picks:
        candidate = known.get(pick.image) or _find_in_pack_folder(pick.image)
        if candidate is None and pick.caption is None:
            problems.append(
                f"{curation.path}: {pick.image} is in no pack folder's manifest, so charpack has "
                "no prompt to caption it from — add 'caption: <what the picture shows>'"
            )
            continue
        candidate = candidate or _loose(pick.image)
        score = "" if candidate.score is None else f" (identity {candidate.score:.3f})"
        why = f"picked in {curation.path.name}{score}"
        chosen.append(Choice(candidate, True, "picked", why, pick.caption))
    if problems:
        raise CharacterError(problems)
    picked = {ch.candidate.image for ch in chosen}
    rest = [
        Choice(c, False, "not_picked", f"not picked in {curation.path.name}")
        for c in candidates
        if c.image not in picked
    ]
    return chosen + rest


def _resolve(base: Path, rel: str) -> Path:
    path = Path(rel).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _find_in_pack_folder(image: Path) -> Candidate | None:
    """The candidate of ``image`` from the manifest of a pack folder above it (≤ 3 levels)."""
    for folder in list(image.parents)[:3]:
        if Manifest.exists(folder):
            matches = [c for c in collect_candidates([folder]) if c.image == image]
            return matches[0] if matches else None
    return None


def _loose(image: Path) -> Candidate:
    """A hand-picked picture no manifest knows (its caption comes from the curation file)."""
    return Candidate(
        image.parent,
        image,
        image.stem,
        "hand-picked",
        "hand-picked",
        0,
        None,
        None,
        IDENTITY_THRESHOLD,
        "",
    )
