"""What a pack is: the pack file's structure (pydantic models, the boundary) and the validated
:class:`Pack` that :func:`charpack.pack.packfile.load_pack` returns.

The models say which fields exist and their types, nothing more: ranges are checked by the
pipeline's own parameter types in ``packfile.py``. :func:`describe_error` turns a pydantic
error into a line that names the file, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charpack_nodes.pipelines import params as P
from charpack_nodes.pipelines.params import shown
from charpack_nodes.pipelines.scene import IDENTITY_THRESHOLD

from .settings import Settings
from .uploads import Upload


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoraModel(_Strict):
    file: str
    strength: float | None = None
    strength_model: float | None = None
    strength_clip: float | None = None
    # The file's sha256 when charpack trained it (``charpack character train`` registers it);
    # the local copy in the character folder's loras/ is checked against it.
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


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


class EarlyGateModel(_Strict):
    """``identity.early_gate``: stop an attempt after the InstantID fix when its face scores
    below ``threshold - margin`` (docs/pipeline.md, "The early identity gate")."""

    enabled: bool = True
    margin: float = Field(default=P.EARLY_GATE_MARGIN, gt=0.0, le=1.0)


class IdentityModel(_Strict):
    enabled: bool = True
    threshold: float = IDENTITY_THRESHOLD
    max_attempts: int = 3
    model_pack: str = P.IdentitySpec.model_pack
    provider: str = P.IdentitySpec.provider
    early_gate: EarlyGateModel = Field(default_factory=EarlyGateModel)

    def early_threshold(self) -> float | None:
        """``threshold - early_gate.margin`` when both gates are on and a rejected attempt is
        retried, else None. With ``max_attempts: 1`` (the identity test) the only attempt runs
        whole: its final score is the measurement and its image the job's. A threshold out of
        range is reported by the pack check; the early gate is left off then."""
        on = self.enabled and self.early_gate.enabled and self.max_attempts > 1
        if not (on and 0.0 <= self.threshold <= 1.0):
            return None
        return round(self.threshold - self.early_gate.margin, 4)

    def early_spec(self) -> P.EarlyGateSpec:
        """The pipeline's early-gate settings for this pack."""
        at = self.early_threshold()
        return P.EarlyGateSpec() if at is None else P.EarlyGateSpec(True, at)


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
    # The early gate's threshold (``threshold - early_gate.margin``), None when it is off.
    early_threshold: float | None = None


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
    # Every picture the pack names (face references, init and pose images) -> its upload name,
    # resolved once while the pack is checked; jobs, the resume identity and the uploads to
    # each server use these, and nothing hashes a picture again.
    uploads: Mapping[Path, Upload] = field(default_factory=dict)

    def upload(self, path: Path) -> Upload:
        """The upload of one of the pack's pictures (resolved when the pack was loaded)."""
        return self.uploads[path]


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
            text = str(part) if isinstance(part, str) else shown(part, 40)
            text = text if len(text) <= 40 else text[:39] + "…"  # a key can be a pasted novel
            out += ("." if out else "") + text
    return out or "(top level)"


def describe_error(label: str, err: Any) -> str:
    """One pydantic error as a line naming the file, the field and the fix."""
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
        return f"{label}: {field}: must be {what}, got {shown(value)} — {how}"
    if kind == "too_short":
        return f"{label}: {field}: must not be empty — add at least one entry"
    message = str(err["msg"])
    message = message if len(message) <= 200 else message[:199] + "…"
    return f"{label}: {field}: {message} — fix the value"
