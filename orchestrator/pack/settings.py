"""Job settings shared by a pack's ``defaults`` and each scene's ``overrides``.

Sampler settings are top-level keys; stage settings sit under ``stages.<stage>`` and use exactly
the field names of the pipeline's parameter types (one spelling everywhere). ``stages.pag: true``
is short for ``stages.pag: {enabled: true}``. Values are type-checked here and range-checked by
the parameter types themselves; :func:`evolve_all` reports every bad value of a mapping, not only
the first the type's checks meet.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import fields
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from charpack_nodes.pipelines import catalog as C
from charpack_nodes.pipelines import params as P
from charpack_nodes.pipelines.params import ParameterError, shown

STAGE_TYPES: dict[str, type] = {
    C.STAGE_FACEID: P.FaceIDSpec,
    C.STAGE_INSTANTID: P.InstantIDSpec,
    C.STAGE_FACE_DETAILER: P.DetailerSpec,
    C.STAGE_UPSCALE: P.UpscaleSpec,
    C.STAGE_PAG: P.PAGSpec,
    C.STAGE_DETECTION: P.DetectionSpec,
}
# The pack file's top-level settings -> (PipelineSpec part, field); ``stages.<stage>.<field>``
# is the part and field themselves. The macro nodes name the same settings alike
# (``charpack_nodes/ops/specs.SETTINGS``) with one mapping, kept for existing pack files: the
# pack file's ``sampler`` is the widget ``sampler_name`` (the field's own name). :func:`pack_key`
# gives the pack-file spelling of any field; tests/unit/test_setting_names.py checks both.
TOP_LEVEL: dict[str, tuple[str, str]] = {
    "width": ("sampler", "width"),
    "height": ("sampler", "height"),
    "steps": ("sampler", "steps"),
    "cfg": ("sampler", "cfg"),
    "sampler": ("sampler", "sampler_name"),
    "scheduler": ("sampler", "scheduler"),
    "compress_level": ("output", "compress_level"),
}


def pack_key(part: str, name: str) -> str | None:
    """Where the field ``name`` of ``PipelineSpec.<part>`` is set in a pack file's ``defaults``
    (``sampler`` or ``stages.faceid.weight``), or None when a pack file cannot set it."""
    for key, target in TOP_LEVEL.items():
        if target == (part, name):
            return key
    if part in STAGE_TYPES and name in _hints(STAGE_TYPES[part]):
        return f"stages.{part}.{name}"
    return None


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    compress_level: int | None = None
    stages: dict[str, Any] = Field(default_factory=dict)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed: list[type] = []
    for arg in args:
        if arg is type(None):
            continue
        allowed.append(arg)
        if arg is float:
            allowed.append(int)
    return tuple(allowed)


def _type_problem(cls: type, name: str, value: Any) -> str | None:
    allowed = _allowed(_hints(cls)[name])
    if isinstance(value, bool) and bool not in allowed:
        return f"must be {_words(allowed)}, got {shown(value)}"
    if not isinstance(value, allowed):
        return f"must be {_words(allowed)}, got {shown(value)}"
    return None


def _words(allowed: tuple[type, ...]) -> str:
    if bool in allowed:
        return "true or false"
    if float in allowed:
        return "a number"
    if int in allowed:
        return "a whole number"
    return "text"


Problem = tuple[str, str, str]  # (field, what is wrong, how to fix it)
T = TypeVar("T")


def evolve_all(obj: T, changes: dict[str, Any]) -> tuple[T | None, list[ParameterError]]:
    """``obj`` with ``changes`` applied, or None and every value's range error.

    A parameter type's checks stop at the first bad field, so each change is first tried alone
    (keeping only errors about that field: one alone may break a cross-field rule that the other
    changes restore), then all together for the rules between fields.
    """
    errors: list[ParameterError] = []
    for key, value in changes.items():
        try:
            P.evolve(obj, **{key: value})
        except ParameterError as exc:
            if exc.field.rsplit(".", 1)[-1] in (key, key.removesuffix("_name")):
                errors.append(exc)
    if errors:
        return None, errors
    try:
        return P.evolve(obj, **changes), []
    except ParameterError as exc:
        return None, [exc]


def fix_for(message: str) -> str:
    """The fix that goes with a parameter type's range message."""
    if "multiple of 8" in message:
        return "round it to a multiple of 8 (the preset size is 832x1216)"
    if "must be between" in message or "must be greater" in message:
        return "use a value in that range"
    if "must be one of" in message:
        return "use one of the listed values"
    if message.startswith("must be"):
        return "write the value in that form"
    return "fix the value (docs/pack-format.md lists every field and its range)"


def apply_settings(
    spec: P.PipelineSpec, settings: Settings, problems: list[Problem], *, where: str
) -> P.PipelineSpec:
    """Return ``spec`` with ``settings`` applied; append (field, problem, fix) to ``problems``."""
    changes: dict[str, Any] = {}
    for key, (part, name) in TOP_LEVEL.items():
        value = getattr(settings, key)
        if value is not None and part == "sampler":
            changes[name] = value
    if changes:
        sampler, errors = evolve_all(spec.sampler, changes)
        for exc in errors:
            problems.append((f"{where}.{exc.field}", exc.message, fix_for(exc.message)))
        if sampler is not None:
            spec = P.evolve(spec, sampler=sampler)
    if settings.compress_level is not None:
        try:
            spec = P.evolve(
                spec, output=P.evolve(spec.output, compress_level=settings.compress_level)
            )
        except ParameterError as exc:
            problems.append((f"{where}.compress_level", exc.message, fix_for(exc.message)))
    for stage, raw in settings.stages.items():
        spec = _apply_stage(spec, stage, raw, problems, where=f"{where}.stages.{_part(stage)}")
    return spec


def _apply_stage(
    spec: P.PipelineSpec, stage: str, raw: Any, problems: list[Problem], *, where: str
) -> P.PipelineSpec:
    cls = STAGE_TYPES.get(stage)
    if cls is None:
        problems.append(
            (where, f"unknown stage {shown(stage)}", f"stages are: {', '.join(STAGE_TYPES)}")
        )
        return spec
    if isinstance(raw, bool) and "enabled" in _hints(cls):
        raw = {"enabled": raw}
    if not isinstance(raw, dict):
        problems.append(
            (
                where,
                f"must be a mapping of settings, got {shown(raw)}",
                "write e.g. {enabled: false}",
            )
        )
        return spec
    names = [f.name for f in fields(cls)]
    ok = True
    for key, value in raw.items():
        if key not in names:
            problems.append(
                (
                    f"{where}.{_part(key)}",
                    "unknown setting",
                    f"{stage} settings are: {', '.join(names)}",
                )
            )
            ok = False
            continue
        problem = _type_problem(cls, key, value)
        if problem:
            problems.append((f"{where}.{_part(key)}", problem, "write the value in that form"))
            ok = False
    if not ok:
        return spec
    updated, errors = evolve_all(getattr(spec, stage), raw)
    for exc in errors:
        leaf = exc.field.rsplit(".", 1)[-1]
        problems.append((f"{where}.{leaf}", exc.message, fix_for(exc.message)))
    return spec if updated is None else P.evolve(spec, **{stage: updated})


def _part(key: object) -> str:
    """A mapping key as a field-path part, cut short: a key can be a pasted novel."""
    text = key if isinstance(key, str) else shown(key, 40)
    return text if len(text) <= 40 else text[:39] + "…"
