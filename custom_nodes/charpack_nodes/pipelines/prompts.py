"""Prompt composition: character parts + scene text into the positive and negative prompts,
and the A1111-style ``parameters`` text that image hosts read from PNG metadata.

Order of the positive prompt: prefix, trigger word, attributes (in the pack's order), scene
prompt, suffix — empty parts are skipped, parts are joined with ", ".
"""

from __future__ import annotations

from .params import PipelineSpec


def _join(parts: list[str]) -> str:
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip())


def positive_prompt(spec: PipelineSpec) -> str:
    """The positive prompt for a job."""
    c = spec.character
    attributes = [value for _key, value in c.attributes]
    return _join([c.prompt_prefix, c.trigger, *attributes, spec.prompt, c.prompt_suffix])


def negative_prompt(spec: PipelineSpec) -> str:
    """The negative prompt: the character's negatives, then the scene's own."""
    return _join([spec.character.negative, spec.negative])


def parameters_text(spec: PipelineSpec) -> str:
    """A1111-style generation parameters (what CivitAI and most viewers parse)."""
    s = spec.sampler
    c = spec.character
    fields = [
        f"Steps: {s.steps}",
        f"Sampler: {s.sampler_name}",
        f"Schedule type: {s.scheduler}",
        f"CFG scale: {s.cfg:g}",
        f"Seed: {s.seed}",
        f"Size: {s.width}x{s.height}",
        f"Model: {c.checkpoint.rsplit('.', 1)[0]}",
    ]
    if c.lora is not None:
        fields.append(
            f"Lora: {c.lora.name.rsplit('.', 1)[0]}:{c.lora.strength_model:g}"
            f"/{c.lora.strength_clip:g}"
        )
    if spec.faceid.enabled:
        fields.append(f"FaceID: {spec.faceid.preset} {spec.faceid.weight:g}")
    if spec.instantid.enabled:
        fields.append(f"InstantID: {spec.instantid.mode} {spec.instantid.weight:g}")
    if spec.face_detailer.enabled:
        fields.append(f"FaceDetailer denoise: {spec.face_detailer.denoise:g}")
    if spec.upscale.enabled:
        fields.append(f"Upscaler: {spec.upscale.model_name.rsplit('.', 1)[0]}")
    if spec.pag.enabled:
        fields.append(f"PAG scale: {spec.pag.scale:g}")
    if spec.img2img is not None:
        fields.append(f"Denoising strength: {spec.img2img.denoise:g}")
    return f"{positive_prompt(spec)}\nNegative prompt: {negative_prompt(spec)}\n" + ", ".join(
        fields
    )
