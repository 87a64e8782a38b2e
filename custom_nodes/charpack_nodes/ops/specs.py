"""Turning node widget values into the pipelines' parameter types.

Owns the mapping from the macro nodes' inputs to a :class:`~charpack_nodes.pipelines.
PipelineSpec`: every value left out (or ``None``, as for an input converted to a socket and not
yet known) keeps the preset from ``pipelines/params.py``, so the nodes never repeat a preset
literal. Also parses the character node's attribute text. Standard library + ``pipelines``
only: it runs outside ComfyUI too (the nodes-tier tests and the docs use it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..pipelines import (
    CharacterSpec,
    LoraSpec,
    ParameterError,
    PipelineSpec,
)
from ..pipelines import catalog as C

NONE_CHOICE = "None"  # the combo entry meaning "no file" (LoRA, second face image)

# Macro input name -> (PipelineSpec field, field of that part). One table, so every macro node
# names a setting the same way and the docs can list them; a stage's on/off switch is named
# after the stage (the catalogue's stage names, as in the pack file).
SETTINGS: dict[str, tuple[str, str]] = {
    "seed": ("sampler", "seed"),
    "steps": ("sampler", "steps"),
    "cfg": ("sampler", "cfg"),
    "sampler_name": ("sampler", "sampler_name"),
    "scheduler": ("sampler", "scheduler"),
    "width": ("sampler", "width"),
    "height": ("sampler", "height"),
    C.STAGE_FACEID: (C.STAGE_FACEID, "enabled"),
    "faceid_weight": (C.STAGE_FACEID, "weight"),
    C.STAGE_INSTANTID: (C.STAGE_INSTANTID, "enabled"),
    "instantid_weight": (C.STAGE_INSTANTID, "weight"),
    "instantid_mode": (C.STAGE_INSTANTID, "mode"),
    "instantid_steps": (C.STAGE_INSTANTID, "steps"),
    C.STAGE_FACE_DETAILER: (C.STAGE_FACE_DETAILER, "enabled"),
    "detailer_denoise": (C.STAGE_FACE_DETAILER, "denoise"),
    "detailer_steps": (C.STAGE_FACE_DETAILER, "steps"),
    C.STAGE_UPSCALE: (C.STAGE_UPSCALE, "enabled"),
    "upscale_model": (C.STAGE_UPSCALE, "model_name"),
    "output_scale": (C.STAGE_UPSCALE, "output_scale"),
    C.STAGE_PAG: (C.STAGE_PAG, "enabled"),
    "pag_scale": (C.STAGE_PAG, "scale"),
}
DEFAULTS = PipelineSpec()


def widget_of(field_label: str) -> str | None:
    """The macro input a :class:`ParameterError`'s field stands for, or None. Range errors name
    a field as the pack file does (``sampler``, ``faceid.weight``, ``upscale.model``); a node's
    error must name the input the user sees (``sampler_name``, ``faceid_weight``,
    ``upscale_model``)."""
    for setting, (part, name) in SETTINGS.items():
        # SamplerSpec's fields are top-level in a pack file; the others sit under their part.
        head = "" if part == "sampler" else f"{part}."
        if field_label in (f"{head}{name}", f"{head}{name.removesuffix('_name')}"):
            return setting
    return None


def preset(setting: str) -> Any:
    """The preset value of a macro input (what its widget shows by default)."""
    part, name = SETTINGS[setting]
    return getattr(getattr(DEFAULTS, part), name)


def parse_attributes(text: str) -> tuple[tuple[str, str], ...]:
    """``"hair: auburn bob\\neyes: green"`` -> ``(("hair", "auburn bob"), ("eyes", "green"))``.

    Blank lines are skipped; a line without ``:`` raises :class:`ParameterError`.
    """
    pairs = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip() or not value.strip():
            raise ParameterError(
                "attributes",
                f"line {number} ({line.strip()!r}) is not 'name: value'; write one attribute "
                "per line, e.g. 'hair: auburn shoulder-length bob'",
            )
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def character_spec(
    *,
    ckpt_name: str,
    lora_name: str,
    lora_strength: float,
    trigger: str,
    face_image: str,
    face_image_2: str | None = None,
    attributes: str = "",
    prompt_prefix: str = "",
    prompt_suffix: str = "",
    negative: str = DEFAULTS.character.negative,
) -> CharacterSpec:
    """The character node's value (LoRA strength applies to model and clip alike)."""
    lora = None
    if lora_name and lora_name != NONE_CHOICE:
        lora = LoraSpec(name=lora_name, strength_model=lora_strength, strength_clip=lora_strength)
    faces = [face_image]
    if face_image_2 and face_image_2 != NONE_CHOICE:
        faces.append(face_image_2)
    return CharacterSpec(
        checkpoint=ckpt_name,
        lora=lora,
        trigger=trigger,
        face_images=tuple(faces),
        attributes=parse_attributes(attributes),
        prompt_prefix=prompt_prefix,
        prompt_suffix=prompt_suffix,
        negative=negative,
    )


def pipeline_spec(
    *,
    character: CharacterSpec | None = None,
    prompt: str | None = None,
    negative: str | None = None,
    **settings: Any,
) -> PipelineSpec:
    """A :class:`PipelineSpec` from macro inputs (names in :data:`SETTINGS`); ``None`` values
    keep the presets. Raises :class:`ParameterError` for a value out of range."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown macro setting(s): {', '.join(unknown)}")
    changes: dict[str, dict[str, Any]] = {}
    for setting, value in settings.items():
        if value is None:
            continue
        part, name = SETTINGS[setting]
        changes.setdefault(part, {})[name] = value
    top: dict[str, Any] = {
        part: replace(getattr(DEFAULTS, part), **fields) for part, fields in changes.items()
    }
    if character is not None:
        top["character"] = character
    if prompt is not None:
        top["prompt"] = prompt
    if negative is not None:
        top["negative"] = negative
    return replace(DEFAULTS, **top)
