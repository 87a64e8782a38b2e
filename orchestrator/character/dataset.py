"""The training dataset of a character: the bootstrap pack, the choice of images, ``dataset/v<N>/``.

Owns three steps between a character's face references and a training:

1. :func:`bootstrap_pack` — a pack file (as a dict) that generates on-identity training images
   when only the references exist: the character *without* LoRA, FaceID + InstantID on, one
   scene per shot type × light (close-up, half body, full body, profile, three-quarter; daylight,
   studio, golden hour, night interior) with neutral fashion, travel and lifestyle prompts.
2. Choosing images from one or more pack folders' manifests: :func:`collect_candidates` reads
   every job image with its scene, shot type, seed, identity score and scene prompt;
   :func:`select` keeps the best scores at or above the identity threshold, with a quota per
   shot type so the set has variety, and drops repeats (same scene and seed, or the same file);
   a ``curation.yaml`` (:func:`load_curation`, :func:`curate`) hand-picks instead, or excludes.
3. :func:`write_dataset` — ``dataset/v<N>/``: each chosen image resized to a training bucket
   (longer side 1024, both sides multiples of 64) with a same-stem ``.txt`` caption
   (:mod:`.captions`), ``dataset.json`` recording every candidate with chosen/why, and
   ``contact.jpg`` showing the chosen images and, grouped by reason, the others.

It runs nothing on a server and never overwrites: a dataset folder that exists is refused.

Public API::

    bootstrap_pack(pack: Mapping, *, source_dir: Path | None = None, per_scene: int = 2,
                   seed: int | None = None) -> dict[str, Any]
    collect_candidates(folders: Sequence[Path]) -> list[Candidate]
    select(candidates, *, target: int = 30, threshold: float | None = None,
           quota: int | None = None) -> list[Choice]
    load_curation(path: Path) -> Curation
    curate(curation, candidates, *, target=30, threshold=None) -> list[Choice]
    choose(folders, *, curation: Path | None = None, target=30, threshold=None) -> list[Choice]
    write_dataset(choices, dest: Path, *, captioner: Captioner, long_side: int = 1024) -> Dataset
    bucket_size(width: int, height: int, long_side: int = 1024) -> tuple[int, int]

Curation file (paths relative to the file; ``caption`` optional, the trigger is put first)::

    images:                       # hand-pick: exactly these images are trained on
      - image: bootstrap/close-up-daylight/close-up-daylight_001_11.png
        caption: linen shirt at a street cafe, soft daylight
      - ../ava-weekend/city-walk/city-walk_002_7.png
    exclude:                      # alone: the automatic choice, without these
      - bootstrap/profile-studio/profile-studio_002_20.png
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import CharacterError
from ..folder.contact_sheet import Tile, TileKind
from ..folder.integrity import place_folder
from .bootstrap import LIGHTS, OUTFITS, SHOT_TYPES, bootstrap_pack, shot_of
from .candidates import (
    DEFAULT_TARGET,
    REASON_TITLES,
    Candidate,
    Choice,
    collect_candidates,
    select,
)
from .captions import Captioner
from .curation import Curation, Pick, curate, load_curation
from .layout import slug
from .report import write_sheet

__all__ = [
    "LIGHTS", "OUTFITS", "SHOT_TYPES", "Candidate", "Choice", "Curation", "Dataset", "Pick",
    "bootstrap_pack", "bucket_size", "choose", "collect_candidates", "curate", "load_curation",
    "select", "shot_of", "write_dataset",
]  # fmt: skip

FORMAT = 1
BUCKET_STEP = 64


def choose(
    folders: Sequence[Path],
    *,
    curation: Path | None = None,
    target: int = DEFAULT_TARGET,
    threshold: float | None = None,
) -> list[Choice]:
    """Candidates of ``folders``, chosen by ``curation`` (when the file exists) or automatically."""
    candidates = collect_candidates(folders)
    if curation is not None and curation.is_file():
        return curate(load_curation(curation), candidates, target=target, threshold=threshold)
    return select(candidates, target=target, threshold=threshold)


# --- 3. writing dataset/v<N>/ ---------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A written dataset folder."""

    folder: Path
    images: tuple[Path, ...]
    captions: tuple[str, ...]
    json: Path
    contact: Path
    record: dict[str, Any] = field(repr=False, default_factory=dict)


def bucket_size(width: int, height: int, long_side: int = 1024) -> tuple[int, int]:
    """The training bucket of a ``width``×``height`` picture: the longer side ``long_side``,
    the other scaled to the same aspect, both rounded to multiples of 64 (at least 64)."""
    if long_side < BUCKET_STEP or long_side % BUCKET_STEP:
        raise ValueError(f"long_side = {long_side}: use a multiple of {BUCKET_STEP} px")
    scale = long_side / max(width, height)

    def side(n: int) -> int:
        return max(BUCKET_STEP, round(n * scale / BUCKET_STEP) * BUCKET_STEP)

    return side(width), side(height)


def write_dataset(
    choices: Sequence[Choice],
    dest: Path,
    *,
    captioner: Captioner,
    long_side: int = 1024,
) -> Dataset:
    """Write the chosen images of ``choices`` into the new folder ``dest`` (``dataset/v<N>``).

    Built in a hidden sibling folder and renamed into place, so ``dest`` is whole or absent;
    an existing ``dest`` is refused (a new dataset is a new version).
    """
    chosen = [ch for ch in choices if ch.chosen]
    if dest.exists():
        raise CharacterError(
            f"{dest}: already exists and is never overwritten — write the next version "
            "(CharacterFolder.next_version())"
        )
    if not chosen:
        raise CharacterError(
            f"{dest}: no image to train on: none is at or above the identity threshold — "
            "generate more bootstrap images, lower the threshold, or hand-pick in curation.yaml"
        )
    work = dest.parent / f".{dest.name}.{os.getpid()}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        images, captions, rows = [], [], []
        for n, choice in enumerate(chosen, start=1):
            c = choice.candidate
            stem = f"{n:03d}-{slug(c.scene)}-{c.seed if c.seed is not None else n}"
            size = _write_bucketed(c.image, work / f"{stem}.png", long_side)
            caption = _caption(choice, captioner)
            (work / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
            images.append(dest / f"{stem}.png")
            captions.append(caption)
            rows.append(
                {
                    "file": f"{stem}.png",
                    "caption": caption,
                    "width": size[0],
                    "height": size[1],
                    "source": str(c.image),
                    "score": c.score,
                    "shot": c.shot,
                }
            )
        record = {
            "format": FORMAT,
            "created": time.time(),
            "trigger": captioner.trigger,
            "long_side": long_side,
            "images": rows,
            "candidates": [ch.to_json() for ch in choices],
        }
        data = json.dumps(record, indent=1, sort_keys=True) + "\n"
        (work / "dataset.json").write_text(data, encoding="utf-8")
        write_sheet(
            _tiles(choices),
            work / "contact.jpg",
            title=f"dataset {dest.name}",
            summary=f"{len(chosen)} chosen of {len(choices)} candidates · trigger "
            f"{captioner.trigger or '(none)'}",
        )
        place_folder(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Dataset(
        dest, tuple(images), tuple(captions), dest / "dataset.json", dest / "contact.jpg", record
    )


# --- helpers --------------------------------------------------------------------------------


def _caption(choice: Choice, captioner: Captioner) -> str:
    if choice.caption is not None:
        text = choice.caption.strip()
        trigger = captioner.trigger.strip()
        return text if not trigger or text.startswith(trigger) else f"{trigger}, {text}"
    c = choice.candidate
    return captioner.caption(c.prompt or c.scene.replace("-", " ").replace("_", " "))


def _write_bucketed(source: Path, target: Path, long_side: int) -> tuple[int, int]:
    try:
        with Image.open(source) as img:
            size = bucket_size(img.width, img.height, long_side)
            fitted = ImageOps.fit(img.convert("RGB"), size, Image.Resampling.LANCZOS)
    except (OSError, UnidentifiedImageError) as exc:
        raise CharacterError(f"{source}: cannot be read ({exc}) — leave it out") from None
    fitted.save(target, "PNG")
    return size


def _tiles(choices: Sequence[Choice]) -> list[Tile]:
    """Chosen images first, numbered as their dataset files, a band per shot type; then the
    others (marked rejected), a band per reason."""
    number = {id(ch): n for n, ch in enumerate((c for c in choices if c.chosen), start=1)}

    def band(ch: Choice) -> str:
        if ch.chosen:
            return ch.candidate.shot
        return f"not chosen: {REASON_TITLES.get(ch.reason, ch.reason)}"

    ordered = sorted(choices, key=lambda ch: (not ch.chosen, band(ch)))
    tiles = []
    for ch in ordered:
        c = ch.candidate
        kind: TileKind = "image" if ch.chosen else "rejected"
        index = number.get(id(ch), c.index)
        no_face = ch.reason == "no_score"
        tiles.append(Tile(kind, band(ch), index, c.seed, c.score, c.image, no_face=no_face))
    return tiles
