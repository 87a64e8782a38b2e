"""The pack file (YAML): parsing and validation, with errors that name the file, the field and
the fix.

A pack names a character (checkpoint, LoRA + strength, trigger word, face references relative to
the pack file, attributes, prompt prefix/suffix, negatives), defaults for every job, the scenes
(prompt, count or explicit seeds, optional init image and pose reference, per-scene overrides)
and the identity gate. Structure is checked with pydantic (the boundary); ranges are checked by
the pipeline's own parameter types, so a limit is written once. Names follow the one rule the
saver applies (``charpack_nodes/pipelines/names.py``). Everything is checked before anything is
sent; all problems are reported at once, not only the first (up to :data:`MAX_PROBLEMS` lines).

The pack's own limits are here: :data:`MAX_SCENES`, :data:`MAX_COUNT` jobs per scene (``count``
or ``seeds``), :data:`MAX_JOBS` per pack, :data:`MAX_FACE_REFERENCES`; the file's (size, depth,
aliases) are in ``packyaml.py``, the pictures' in ``uploads.py``. The structure (pydantic
models) and the validated :class:`Pack` are in ``model.py``. Each picture's upload name is
resolved here, once, when it is checked (:attr:`Pack.uploads`): job expansion (``jobs.py``),
the resume identity and the uploads to every server use it. This module only reads and checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from charpack_nodes.pipelines import params as P
from charpack_nodes.pipelines.names import name_key, name_problem
from charpack_nodes.pipelines.params import ParameterError, shown

from ..errors import PackError
from .model import IdentityGate, Pack, PackModel, PoseModel, Scene, SceneModel, describe_error
from .packyaml import describe_file, read_pack_yaml
from .settings import Problem, apply_settings, evolve_all, fix_for
from .uploads import PictureRefused, Upload, read_picture, upload_for

__all__ = [  # the models and the validated Pack live in model.py; importers use this module
    "IMAGE_SUFFIXES",
    "MAX_COUNT",
    "MAX_FACE_REFERENCES",
    "MAX_JOBS",
    "MAX_PROBLEMS",
    "MAX_SCENES",
    "VERSION",
    "IdentityGate",
    "Pack",
    "Scene",
    "load_pack",
]

SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # whole name: always fullmatch
VERSION = 1
MAX_COUNT = 10_000  # jobs per scene, as count or as seeds
MAX_JOBS = 200_000  # jobs per pack: ~1,000 GPU hours at 18 s an image; split larger packs
MAX_SCENES = 1_000
MAX_FACE_REFERENCES = 16
MAX_PROBLEMS = 100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def load_pack(path: str | Path) -> Pack:
    """Read and validate a pack file; raise :class:`PackError` listing every problem."""
    path = Path(path)
    label = str(path)
    raw = read_pack_yaml(path, label)
    _check_before_structure(raw, label)
    try:
        model = PackModel.model_validate(raw)
    except PydanticValidationError as exc:
        raise PackError(
            _capped([describe_error(label, err) for err in exc.errors(include_url=False)])
        ) from None
    return _Checker(path, label, model, raw).run()


def _check_before_structure(raw: dict[str, Any], label: str) -> None:
    """What decides how (or whether) the rest is read: the format version, and list lengths
    that would make checking every entry slow."""
    version = raw.get("version", VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version != VERSION:
        raise PackError(
            f"{label}: version: {shown(version)} is not a pack format this charpack reads (it "
            f"reads version {VERSION}) — set version: {VERSION} (docs/pack-format.md), or "
            "upgrade charpack if the file was written for a newer one"
        )
    scenes = raw.get("scenes")
    if isinstance(scenes, list) and len(scenes) > MAX_SCENES:
        raise PackError(
            f"{label}: scenes: {len(scenes):,} scenes; a pack has at most {MAX_SCENES:,} — "
            "split it into several packs"
        )
    character = raw.get("character")
    faces = character.get("face_references") if isinstance(character, dict) else None
    if isinstance(faces, list) and len(faces) > MAX_FACE_REFERENCES:
        raise PackError(
            f"{label}: character.face_references: {len(faces):,} pictures; at most "
            f"{MAX_FACE_REFERENCES} are used — keep the best few (they are averaged)"
        )


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], f"… and {more:,} more problems — fix these first"]


class _Checker:
    """Semantic checks after the structure is known to be right; collects every problem."""

    def __init__(self, path: Path, label: str, model: PackModel, raw: dict[str, Any]) -> None:
        self.path = path
        self.label = label
        self.model = model
        self.raw = raw
        self.problems: list[str] = []
        self.pictures: dict[Path, tuple[str, str] | None] = {}
        self.uploads: dict[Path, Upload] = {}  # the one place a picture's upload name is made

    def fail(self, field: str, problem: str, fix: str) -> None:
        self.problems.append(f"{self.label}: {field}: {problem} — {fix}")

    def run(self) -> Pack:
        m = self.model
        self._name("pack", m.pack)
        self._int("seed", m.seed, 0, P.MAX_SEED)
        faces = tuple(
            self._image(f"character.face_references[{i}]", ref)
            for i, ref in enumerate(m.character.face_references)
        )
        character = self._character()
        gate = self._identity()
        base = self._defaults(character)
        scenes = self._scenes(base)
        self._job_total(scenes)
        if self.problems:
            raise PackError(_capped(self.problems))
        return Pack(
            path=self.path,
            name=m.pack,
            seed=m.seed,
            character_name=m.character.name,
            face_references=tuple(f for f in faces if f is not None),
            scenes=tuple(scenes),
            identity=gate,
            raw=self.raw,
            uploads=self.uploads,
        )

    def _int(self, field: str, value: int, lo: int, hi: int) -> None:
        if not lo <= value <= hi:
            self.fail(
                field, f"must be between {lo} and {hi}, got {shown(value)}", "use a value in range"
            )

    def _name(self, field: str, name: str) -> None:
        """The saver's rule first (so nothing validated here is refused at the last node), then
        the stricter portable form pack and scene names take."""
        problem = name_problem(name)
        if problem is not None:
            self.fail(field, f"{shown(name)} {problem}", _SLUG_FIX)
        elif not SLUG.fullmatch(name):
            self.fail(field, f"{shown(name)} is not a usable folder name", _SLUG_FIX)

    def _job_total(self, scenes: list[Scene]) -> None:
        total = sum(s.count for s in scenes)
        if total > MAX_JOBS:
            self.fail(
                "scenes",
                f"{total:,} jobs in all; a pack has at most {MAX_JOBS:,}",
                "split it into several packs (each gets its own folder)",
            )

    def _image(self, field: str, rel: str) -> Path | None:
        name = _path_text(rel)
        here = f"paths are relative to {self.path.parent}"
        path = self.path.parent / rel
        problem = describe_file(path)
        if problem == "not found":
            self.fail(field, f"file not found: {name}", here)
            return None
        if problem is not None:
            self.fail(field, f"{name} {problem}", f"give a picture file; {here}")
            return None
        path = path.resolve()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            self.fail(field, f"{name} is not an image file", "use a PNG, JPEG or WebP file")
            return None
        if path not in self.pictures:  # many scenes may share one init or pose picture
            self.pictures[path] = refused = _picture_problem(path)
            if refused is None:
                try:
                    self.uploads[path] = upload_for(path)
                except OSError as exc:
                    self.pictures[path] = f"cannot read \0 ({exc.strerror})", "check the file"
        refused = self.pictures[path]
        if refused is not None:
            self.fail(field, refused[0].replace("\0", name), refused[1])
            return None
        return path

    def _character(self) -> P.CharacterSpec | None:
        c = self.model.character
        lora: P.LoraSpec | None = None
        if c.lora is not None:
            changes: dict[str, Any] = {"name": c.lora.file}
            if c.lora.strength_model is not None:
                changes["strength_model"] = c.lora.strength_model
            if c.lora.strength_clip is not None:
                changes["strength_clip"] = c.lora.strength_clip
            if c.lora.strength is not None:
                if len(changes) > 1:
                    self.fail(
                        "character.lora",
                        "strength and strength_model/strength_clip are both set",
                        "use strength (both) or the two separate values",
                    )
                changes["strength_model"] = changes["strength_clip"] = c.lora.strength
            lora, errors = evolve_all(P.LoraSpec(), changes)
            reported = set()
            for exc in errors:
                field = "character.lora.file"
                if exc.field.startswith("lora.strength"):
                    field = "character.lora." + (
                        "strength" if c.lora.strength is not None else exc.field[len("lora.") :]
                    )
                if field not in reported:
                    reported.add(field)
                    fix = "the preset is 0.7" if "strength" in field else "fix it"
                    self.fail(field, exc.message, fix)
            if errors:
                return None
        try:
            return P.CharacterSpec(
                checkpoint=c.checkpoint,
                lora=lora,
                trigger=c.trigger,
                face_images=tuple(c.face_references),
                attributes=tuple(c.attributes.items()),
                prompt_prefix=c.prompt_prefix,
                prompt_suffix=c.prompt_suffix,
                negative=c.negative,
            )
        except ParameterError as exc:
            self.fail(exc.field, exc.message, "fix it")
            return None

    def _identity(self) -> IdentityGate:
        i = self.model.identity
        if not 0.0 <= i.threshold <= 1.0:
            self.fail(
                "identity.threshold",
                f"must be between 0 and 1, got {i.threshold:g}",
                "it is an ArcFace cosine similarity; 0.45 is a good start",
            )
        self._int("identity.max_attempts", i.max_attempts, 1, 10)
        changes = {"enabled": i.enabled, "model_pack": i.model_pack, "provider": i.provider}
        for exc in evolve_all(P.IdentitySpec(), changes)[1]:
            self.fail(exc.field, exc.message, fix_for(exc.message))
        return IdentityGate(i.enabled, i.threshold, i.max_attempts, i.early_threshold())

    def _defaults(self, character: P.CharacterSpec | None) -> P.PipelineSpec | None:
        """The pack-wide spec: character + defaults + identity settings, checked once."""
        i = self.model.identity
        problems: list[Problem] = []
        spec = P.PipelineSpec(character=character or P.CharacterSpec())
        spec = apply_settings(spec, self.model.defaults, problems, where="defaults")
        try:
            spec = P.evolve(spec, identity=P.IdentitySpec(i.enabled, i.model_pack, i.provider))
            spec = P.evolve(spec, early_gate=i.early_spec())
        except ParameterError:
            pass  # reported by _identity
        for problem in problems:
            self.fail(*problem)
        return None if problems or character is None else spec

    def _scenes(self, base: P.PipelineSpec | None) -> list[Scene]:
        seen: dict[str, int] = {}
        scenes = []
        for index, s in enumerate(self.model.scenes):
            where = f"scenes[{index}]"
            self._name(f"{where}.name", s.name)
            # Windows and macOS keep 'Cafe' and 'cafe' in one folder: they are one name.
            key = name_key(s.name)
            if key in seen:
                other = self.model.scenes[seen[key]].name
                also = f"scenes[{seen[key]}]" + ("" if other == s.name else f" {shown(other)}")
                self.fail(
                    f"{where}.name",
                    f"duplicate scene name {shown(s.name)} (also {also})",
                    "give every scene its own name"
                    + ("" if other == s.name else " (case does not count)"),
                )
            seen.setdefault(key, index)
            scene = self._scene(where, s, base)
            if scene is not None:
                scenes.append(scene)
        return scenes

    def _scene(self, where: str, s: SceneModel, base: P.PipelineSpec | None) -> Scene | None:
        if (s.count is None) == (s.seeds is None):
            self.fail(where, "needs exactly one of count or seeds", "set count: N or seeds: [..]")
        if s.count is not None:
            self._int(f"{where}.count", s.count, 1, MAX_COUNT)
        if s.seeds is not None:
            if not s.seeds:
                self.fail(f"{where}.seeds", "must not be empty", "list at least one seed")
            if len(s.seeds) > MAX_COUNT:
                self.fail(
                    f"{where}.seeds",
                    f"lists {len(s.seeds):,} seeds; a scene has at most {MAX_COUNT:,} jobs",
                    "split it into several scenes",
                )
            for i, seed in enumerate(s.seeds):
                self._int(f"{where}.seeds[{i}]", seed, 0, P.MAX_SEED)
            if len(set(s.seeds)) != len(s.seeds):
                self.fail(f"{where}.seeds", "lists a seed twice", "remove the repeated seed")
        init = self._image(f"{where}.init_image", s.init_image) if s.init_image else None
        pose_image = self._image(f"{where}.pose.image", s.pose.image) if s.pose else None
        spec = self._spec(where, s, base)
        if spec is None:
            return None
        return Scene(
            name=s.name,
            prompt=s.prompt,
            negative=s.negative,
            seeds=tuple(s.seeds) if s.seeds is not None else None,
            count=len(s.seeds) if s.seeds is not None else (s.count or 0),
            init_image=init,
            init_denoise=s.init_denoise,
            pose=s.pose,
            pose_image=pose_image,
            spec=spec,
        )

    def _spec(
        self, where: str, s: SceneModel, base: P.PipelineSpec | None
    ) -> P.PipelineSpec | None:
        problems: list[Problem] = []
        spec = P.evolve(base or P.PipelineSpec(), prompt=s.prompt, negative=s.negative)
        spec = apply_settings(spec, s.overrides, problems, where=f"{where}.overrides")
        img2img, pose, errors = None, None, []
        if s.init_image:
            img2img, found = evolve_all(P.Img2ImgSpec("init.png"), {"denoise": s.init_denoise})
            errors += found
        if s.pose:
            pose, found = evolve_all(P.PoseSpec(image="pose.png"), _pose_changes(s.pose))
            errors += found
        for exc in errors:
            field = f"{where}.{_scene_field(exc.field)}"
            problems.append((field, exc.message, fix_for(exc.message)))
        if not errors:
            spec = P.evolve(spec, img2img=img2img, pose=pose)
        for problem in problems:
            self.fail(*problem)
        return None if problems or base is None else spec


_SLUG_FIX = "use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit"


def _pose_changes(p: PoseModel) -> dict[str, Any]:
    return {
        "control_net_name": p.control_net,
        "strength": p.strength,
        "start_percent": p.start_percent,
        "end_percent": p.end_percent,
        "preprocess": p.preprocess,
    }


def _picture_problem(path: Path) -> tuple[str, str] | None:
    """(what is wrong, with NUL standing for the file's name; the fix) or None."""
    try:
        read_picture(path)
    except PictureRefused as refused:
        if refused.problem.startswith("cannot be read"):
            return "cannot read \0 as an image", "re-export it as PNG or JPEG"
        return f"\0 {refused.problem}", refused.fix
    except OSError as exc:
        return f"cannot read \0 ({exc.strerror})", "check the file"
    return None


def _path_text(rel: str) -> str:
    """A path as the user wrote it, for a message; quoted and cut when long or unprintable."""
    return rel if len(rel) <= 80 and rel.isprintable() else shown(rel)


def _scene_field(field: str) -> str:
    return field.replace("control_net_name", "control_net")
