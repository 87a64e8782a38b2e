"""Training-image candidates from pack folders, and the automatic choice among them.

Owns :class:`Candidate` (a job image of a pack folder with its scene, shot type, seed, identity
score and prompt), :class:`Choice` (a candidate's verdict and why), :func:`collect_candidates`
(every job image of one or more pack folders' manifests) and :func:`select` (the best scores at
or above the identity threshold, a quota per shot type for variety, repeats dropped).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from charpack_nodes.pipelines.scene import IDENTITY_THRESHOLD

from ..errors import CharacterError
from ..folder.manifest import Manifest, ManifestError
from ..folder.report import inside, read_header
from .bootstrap import shot_of

DEFAULT_TARGET = 30


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
