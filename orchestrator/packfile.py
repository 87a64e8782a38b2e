"""The pack file (YAML): parsing and validation, with errors that name the file, the field and
the fix.

A pack names a character (checkpoint, LoRA + strength, trigger word, face references relative to
the pack file, attributes, prompt prefix/suffix, negatives), defaults for every job, the scenes
(prompt, count or explicit seeds, optional init image and pose reference, per-scene overrides)
and the identity gate. Structure is checked with pydantic (the boundary); ranges are checked by
the pipeline's own parameter types, so a limit is written once. Everything is checked before
anything is sent; all problems are reported at once, not only the first.

Job expansion lives in ``jobs.py``; this module only reads and checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from charpack_nodes.pipelines import params as P
from charpack_nodes.pipelines.params import ParameterError
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from .errors import PackError
from .settings import Problem, Settings, apply_settings, fix_for

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_COUNT = 10_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoraModel(_Strict):
    file: str
    strength: float | None = None
    strength_model: float | None = None
    strength_clip: float | None = None


class CharacterModel(_Strict):
    name: str
    checkpoint: str = P.CharacterSpec.checkpoint
    lora: LoraModel | None = None
    trigger: str = ""
    face_references: list[str] = Field(min_length=1)
    attributes: dict[str, str] = Field(default_factory=dict)
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    negative: str = P.DEFAULT_NEGATIVE


class PoseModel(_Strict):
    image: str
    control_net: str = P.PoseSpec.control_net_name
    strength: float = P.PoseSpec.strength
    start_percent: float = P.PoseSpec.start_percent
    end_percent: float = P.PoseSpec.end_percent
    preprocess: str = P.PoseSpec.preprocess


class SceneModel(_Strict):
    name: str
    prompt: str
    negative: str = ""
    count: int | None = None
    seeds: list[int] | None = None
    init_image: str | None = None
    init_denoise: float = 0.5
    pose: PoseModel | None = None
    overrides: Settings = Field(default_factory=Settings)


class IdentityModel(_Strict):
    enabled: bool = True
    threshold: float = 0.45
    max_attempts: int = 3
    model_pack: str = P.IdentitySpec.model_pack
    provider: str = P.IdentitySpec.provider


class PackModel(_Strict):
    version: int = 1
    pack: str
    seed: int = 0
    character: CharacterModel
    defaults: Settings = Field(default_factory=Settings)
    identity: IdentityModel = Field(default_factory=IdentityModel)
    scenes: list[SceneModel] = Field(min_length=1)


@dataclass(frozen=True)
class Scene:
    """One validated scene; image paths are absolute, settings already merged."""

    name: str
    prompt: str
    negative: str
    seeds: tuple[int, ...] | None
    count: int
    init_image: Path | None
    init_denoise: float
    pose: PoseModel | None
    pose_image: Path | None
    spec: P.PipelineSpec  # everything but seed, output names and server-side file names


@dataclass(frozen=True)
class IdentityGate:
    enabled: bool
    threshold: float
    max_attempts: int


@dataclass(frozen=True)
class Pack:
    """A validated pack file."""

    path: Path
    name: str
    seed: int
    character_name: str
    face_references: tuple[Path, ...]
    scenes: tuple[Scene, ...]
    identity: IdentityGate
    raw: dict[str, Any]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_pack(path: str | Path) -> Pack:
    """Read and validate a pack file; raise :class:`PackError` listing every problem."""
    path = Path(path)
    label = str(path)
    raw = _read_yaml(path, label)
    try:
        model = PackModel.model_validate(raw)
    except PydanticValidationError as exc:
        raise PackError([_describe(label, err) for err in exc.errors()]) from None
    return _Checker(path, label, model, raw).run()


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    if not path.is_file():
        raise PackError(f"{label}: pack file not found — check the path (relative to {Path.cwd()})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError(
            f"{label}: cannot read the pack file ({exc}) — save it as UTF-8 text"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PackError(
            f"{label}: not valid YAML{where}: {problem} — check indentation and quoting there"
        ) from None
    if not isinstance(data, dict):
        raise PackError(
            f"{label}: the pack file must be a mapping with keys pack, character, scenes — "
            "see examples/small-pack.yaml"
        )
    return data


_TYPE_WORDS = {  # pydantic error type -> (what it must be, how to write it)
    "int_type": ("a whole number", "write digits without quotes, e.g. 4"),
    "int_from_float": ("a whole number", "drop the decimals"),
    "float_type": ("a number", "write digits without quotes, e.g. 0.7"),
    "string_type": ("text", "put the value in quotes"),
    "bool_type": ("true or false", "write true or false"),
    "list_type": ("a list", "write it as [a, b] or one '- item' per line"),
    "dict_type": ("a mapping", "write it as 'key: value' lines"),
    "model_type": ("a mapping", "write it as 'key: value' lines"),
    "model_attributes_type": ("a mapping", "write it as 'key: value' lines"),
}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(label: str, err: Any) -> str:
    loc = tuple(p for p in err["loc"] if p not in ("function-after",))
    field = _dotted(loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return (
            f"{label}: {field}: required field is missing — add it (see examples/small-pack.yaml)"
        )
    if kind == "extra_forbidden":
        return f"{label}: {field}: unknown field — remove it or fix its spelling"
    if kind in _TYPE_WORDS:
        what, how = _TYPE_WORDS[kind]
        return f"{label}: {field}: must be {what}, got {value!r} — {how}"
    if kind == "too_short":
        return f"{label}: {field}: must not be empty — add at least one entry"
    return f"{label}: {field}: {err['msg']} — fix the value"


class _Checker:
    """Semantic checks after the structure is known to be right; collects every problem."""

    def __init__(self, path: Path, label: str, model: PackModel, raw: dict[str, Any]) -> None:
        self.path = path
        self.label = label
        self.model = model
        self.raw = raw
        self.problems: list[str] = []

    def fail(self, field: str, problem: str, fix: str) -> None:
        self.problems.append(f"{self.label}: {field}: {problem} — {fix}")

    def run(self) -> Pack:
        m = self.model
        if not SLUG.match(m.pack):
            self.fail("pack", f"{m.pack!r} is not a usable folder name", _SLUG_FIX)
        self._int("seed", m.seed, 0, P.MAX_SEED)
        faces = tuple(
            self._image(f"character.face_references[{i}]", ref)
            for i, ref in enumerate(m.character.face_references)
        )
        character = self._character()
        gate = self._identity()
        base = self._defaults(character)
        scenes = self._scenes(base)
        if self.problems:
            raise PackError(self.problems)
        return Pack(
            path=self.path,
            name=m.pack,
            seed=m.seed,
            character_name=m.character.name,
            face_references=tuple(f for f in faces if f is not None),
            scenes=tuple(scenes),
            identity=gate,
            raw=self.raw,
        )

    def _int(self, field: str, value: int, lo: int, hi: int) -> None:
        if not lo <= value <= hi:
            self.fail(field, f"must be between {lo} and {hi}, got {value}", "use a value in range")

    def _image(self, field: str, rel: str) -> Path | None:
        from PIL import Image, UnidentifiedImageError

        path = (self.path.parent / rel).resolve()
        if not path.is_file():
            self.fail(field, f"file not found: {rel}", f"paths are relative to {self.path.parent}")
            return None
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            self.fail(field, f"{rel} is not an image file", "use a PNG, JPEG or WebP file")
            return None
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            self.fail(field, f"cannot read {rel} as an image", "re-export it as PNG or JPEG")
            return None
        return path

    def _character(self) -> P.CharacterSpec | None:
        c = self.model.character
        lora: P.LoraSpec | None = None
        try:
            if c.lora is not None:
                model_s = c.lora.strength_model
                clip_s = c.lora.strength_clip
                if c.lora.strength is not None:
                    if model_s is not None or clip_s is not None:
                        self.fail(
                            "character.lora",
                            "strength and strength_model/strength_clip are both set",
                            "use strength (both) or the two separate values",
                        )
                    model_s = clip_s = c.lora.strength
                lora = P.LoraSpec(
                    name=c.lora.file,
                    strength_model=P.LoraSpec.strength_model if model_s is None else model_s,
                    strength_clip=P.LoraSpec.strength_clip if clip_s is None else clip_s,
                )
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
            field = exc.field
            if field.startswith("lora.strength"):
                field = "character.lora.strength"
            elif field.startswith("lora."):
                field = "character.lora.file"
            self.fail(field, exc.message, "the preset is 0.7" if "strength" in field else "fix it")
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
        try:
            P.IdentitySpec(enabled=i.enabled, model_pack=i.model_pack, provider=i.provider)
        except ParameterError as exc:
            self.fail(exc.field, exc.message, "fix the value")
        return IdentityGate(i.enabled, i.threshold, i.max_attempts)

    def _defaults(self, character: P.CharacterSpec | None) -> P.PipelineSpec | None:
        """The pack-wide spec: character + defaults + identity settings, checked once."""
        i = self.model.identity
        problems: list[Problem] = []
        spec = P.PipelineSpec(character=character or P.CharacterSpec())
        spec = apply_settings(spec, self.model.defaults, problems, where="defaults")
        try:
            spec = P.evolve(spec, identity=P.IdentitySpec(i.enabled, i.model_pack, i.provider))
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
            if not SLUG.match(s.name):
                self.fail(f"{where}.name", f"{s.name!r} is not a usable folder name", _SLUG_FIX)
            if s.name in seen:
                self.fail(
                    f"{where}.name",
                    f"duplicate scene name {s.name!r} (also scenes[{seen[s.name]}])",
                    "give every scene its own name",
                )
            seen.setdefault(s.name, index)
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
        try:
            spec = P.evolve(
                spec,
                img2img=P.Img2ImgSpec("init.png", s.init_denoise) if s.init_image else None,
                pose=_pose_spec(s.pose) if s.pose else None,
            )
        except ParameterError as exc:
            field = f"{where}.{_scene_field(exc.field)}"
            problems.append((field, exc.message, fix_for(exc.message)))
        for problem in problems:
            self.fail(*problem)
        return None if problems or base is None else spec


_SLUG_FIX = "use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit"


def _pose_spec(p: PoseModel) -> P.PoseSpec:
    return P.PoseSpec(
        image="pose.png",
        control_net_name=p.control_net,
        strength=p.strength,
        start_percent=p.start_percent,
        end_percent=p.end_percent,
        preprocess=p.preprocess,
    )


def _scene_field(field: str) -> str:
    return field.replace("control_net_name", "control_net")
