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

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

from charpack_nodes.pipelines import catalog
from charpack_nodes.pipelines.scene import IDENTITY_THRESHOLD

from ..errors import CharacterError
from ..folder.contact_sheet import Tile, TileKind
from ..folder.manifest import Manifest, ManifestError
from ..folder.report import inside, read_header
from .captions import Captioner
from .layout import slug
from .report import write_sheet
from .trigger import COMMON_WORDS

FORMAT = 1
DEFAULT_TARGET = 30
BUCKET_STEP = 64

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

Reason = Literal[
    "chosen",
    "picked",
    "below_threshold",
    "no_score",
    "duplicate",
    "quota",
    "full",
    "excluded",
    "not_picked",
]
REASON_TITLES: dict[str, str] = {
    "below_threshold": "identity below the threshold",
    "no_score": "no identity score (no face found)",
    "duplicate": "repeat of a chosen image",
    "quota": "shot type quota full",
    "full": "dataset full",
    "excluded": "excluded in curation.yaml",
    "not_picked": "not picked in curation.yaml",
}


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


# --- 2. candidates and the choice -----------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A job image of a pack folder that could go into the dataset."""

    folder: Path  # its pack folder
    image: Path  # absolute path
    key: str  # the job key, ``<scene>/<index:03d>``
    scene: str
    shot: str  # shot type (:func:`shot_of`)
    index: int
    seed: int | None
    score: float | None
    threshold: float  # its pack folder's identity threshold
    prompt: str  # the scene prompt ("" when the pack file is gone)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "pack_folder": str(self.folder),
            "key": self.key,
            "scene": self.scene,
            "shot": self.shot,
            "seed": self.seed,
            "score": self.score,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class Choice:
    """A candidate with the verdict: chosen or not, and why."""

    candidate: Candidate
    chosen: bool
    reason: Reason
    why: str
    caption: str | None = None  # a caption given in curation.yaml

    def to_json(self) -> dict[str, Any]:
        return {
            **self.candidate.to_json(),
            "chosen": self.chosen,
            "reason": self.reason,
            "why": self.why,
        }


def collect_candidates(folders: Sequence[Path]) -> list[Candidate]:
    """Every job image (accepted or kept below the threshold) of the pack folders, in order."""
    out: list[Candidate] = []
    for folder in folders:
        try:
            manifest = Manifest.load(folder)
        except ManifestError as exc:
            raise CharacterError(str(exc)) from None
        threshold = read_header(manifest).threshold
        prompts = _scene_prompts(manifest)
        for entry in manifest:
            image = entry.get("image")
            if not image or entry.get("status") not in ("done", "below_threshold"):
                continue
            path = inside(folder, str(image))
            if not path.is_file():
                continue
            scene = str(entry.get("scene", "?"))
            score = entry.get("score")
            prompt = prompts.get(scene, "")
            out.append(
                Candidate(
                    folder=folder.resolve(),
                    image=path.resolve(),
                    key=str(entry.get("key", scene)),
                    scene=scene,
                    shot=shot_of(scene, prompt),
                    index=int(entry.get("index", 0)),
                    seed=entry.get("seed"),
                    score=float(score) if isinstance(score, (int, float)) else None,
                    threshold=IDENTITY_THRESHOLD if threshold is None else threshold,
                    prompt=prompt,
                )
            )
    return out


def select(
    candidates: Sequence[Candidate],
    *,
    target: int = DEFAULT_TARGET,
    threshold: float | None = None,
    quota: int | None = None,
) -> list[Choice]:
    """The automatic choice: best identity first, at most ``quota`` per shot type, ``target``
    images in all; every candidate gets a verdict (returned in candidate order).

    ``threshold`` None uses each candidate's pack folder threshold. ``quota`` None shares the
    target evenly between the shot types present (rounded up). Slots a scarce shot type leaves
    free are filled afterwards from the best images over their quota.
    """
    if target < 1:
        raise ValueError(f"target = {target}: a dataset needs at least 1 image")
    shots = {c.shot for c in candidates}
    per_shot = quota if quota is not None else math.ceil(target / max(1, len(shots)))
    verdicts: dict[int, Choice] = {}
    order = sorted(range(len(candidates)), key=lambda i: -(candidates[i].score or -1.0))
    seen_keys: dict[tuple[str, int | None], Candidate] = {}
    seen_files: dict[str, Candidate] = {}
    eligible: list[int] = []
    for i in order:
        c = candidates[i]
        bar = c.threshold if threshold is None else threshold
        if c.score is None:
            verdicts[i] = Choice(c, False, "no_score", "no identity score: no face was found")
            continue
        if c.score < bar:
            why = f"identity {c.score:.3f} below the threshold {bar:.2f}"
            verdicts[i] = Choice(c, False, "below_threshold", why)
            continue
        twin = seen_keys.get((c.scene, c.seed)) or seen_files.get(_digest(c.image))
        if twin is not None:
            why = f"repeat of {twin.image.name} (same scene and seed, or the same picture)"
            verdicts[i] = Choice(c, False, "duplicate", why)
            continue
        seen_keys[(c.scene, c.seed)] = c
        seen_files[_digest(c.image)] = c
        eligible.append(i)
    taken: dict[str, int] = {}
    chosen = 0
    over: list[int] = []
    for i in eligible:
        c = candidates[i]
        if taken.get(c.shot, 0) >= per_shot:
            over.append(i)
            continue
        if chosen < target:
            taken[c.shot] = taken.get(c.shot, 0) + 1
            chosen += 1
            why = f"identity {c.score:.3f}, #{taken[c.shot]} of shot type {c.shot}"
            verdicts[i] = Choice(c, True, "chosen", why)
        else:
            verdicts[i] = Choice(c, False, "full", f"the dataset already has {target} images")
    for i in over:
        c = candidates[i]
        if chosen < target:
            chosen += 1
            why = f"identity {c.score:.3f}, over the {c.shot} quota of {per_shot} (room left)"
            verdicts[i] = Choice(c, True, "chosen", why)
        else:
            why = f"{c.shot} already has {per_shot} images (quota), the dataset {target}"
            verdicts[i] = Choice(c, False, "quota", why)
    return [verdicts[i] for i in range(len(candidates))]


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
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Dataset(
        dest, tuple(images), tuple(captions), dest / "dataset.json", dest / "contact.jpg", record
    )


# --- helpers --------------------------------------------------------------------------------


def _scene_prompts(manifest: Manifest) -> dict[str, str]:
    """Scene name -> prompt, from the pack file the manifest names (when it is still there)."""
    pack = manifest.header.get("pack")
    file = pack.get("file") if isinstance(pack, dict) else None
    if not isinstance(file, str):
        return {}
    try:
        data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    scenes = data.get("scenes") if isinstance(data, dict) else None
    return {
        str(s["name"]): str(s.get("prompt", ""))
        for s in scenes or []
        if isinstance(s, dict) and "name" in s
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
