"""The pieces every stage shares: checkpoint + LoRA, the prompts, the face reference, FaceID.

Each function is idempotent (same ids, same inputs): :meth:`Graph.node` returns the node it
already holds for an id, so a stage asks for the models or the reference and the first asker
creates them. Exports the node ids it emits; other modules import these, never re-spell them.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import catalog as C
from .graph import Graph, Link
from .params import PipelineSpec
from .prompts import negative_prompt, positive_prompt

CKPT = "base.ckpt"
LORA = "base.lora"
POSITIVE = "base.pos"
NEGATIVE = "base.neg"
FACE = "ref.face"  # the first reference; the n-th (n >= 2) is f"{FACE}{n}"
FACE_BATCH = "ref.batch"  # batching the n-th reference in: f"{FACE_BATCH}{n}"
FACEID_LOADER = "faceid.loader"
FACEID_APPLY = "faceid.apply"


@dataclass(frozen=True)
class Models:
    model: Link
    clip: Link
    vae: Link


def add_models(g: Graph, spec: PipelineSpec) -> Models:
    """Checkpoint + character LoRA (0.7 on model and clip)."""
    c = spec.character
    ckpt = g.node(C.CHECKPOINT_LOADER.class_type, CKPT, ckpt_name=c.checkpoint)
    model, clip, vae = ckpt.out(0), ckpt.out(1), ckpt.out(2)
    if c.lora is not None:
        lora = g.node(
            C.LORA_LOADER.class_type,
            LORA,
            model=model,
            clip=clip,
            lora_name=c.lora.name,
            strength_model=c.lora.strength_model,
            strength_clip=c.lora.strength_clip,
        )
        model, clip = lora.out(0), lora.out(1)
    return Models(model=model, clip=clip, vae=vae)


def add_conditioning(g: Graph, spec: PipelineSpec) -> tuple[Link, Link]:
    clip = add_models(g, spec).clip
    pos = g.node(C.CLIP_TEXT_ENCODE.class_type, POSITIVE, text=positive_prompt(spec), clip=clip)
    neg = g.node(C.CLIP_TEXT_ENCODE.class_type, NEGATIVE, text=negative_prompt(spec), clip=clip)
    return pos.out(0), neg.out(0)


def add_reference(g: Graph, spec: PipelineSpec) -> Link:
    """The face reference(s), batched into one IMAGE when there are several."""
    names = spec.character.face_images
    first = g.node(C.LOAD_IMAGE.class_type, FACE, image=names[0]).out(0)
    for index, name in enumerate(names[1:], start=2):
        other = g.node(C.LOAD_IMAGE.class_type, f"{FACE}{index}", image=name).out(0)
        first = g.node(
            C.IMAGE_BATCH.class_type, f"{FACE_BATCH}{index}", image1=first, image2=other
        ).out(0)
    return first


def add_faceid_model(g: Graph, spec: PipelineSpec) -> Link:
    """The LoRA'd model with one IP-Adapter FaceID Plus V2 applied (or without, when off)."""
    model = add_models(g, spec).model
    f = spec.faceid
    if not f.enabled:
        return model
    loader = g.node(
        C.IPADAPTER_UNIFIED_LOADER_FACEID.class_type,
        FACEID_LOADER,
        model=model,
        preset=f.preset,
        lora_strength=f.lora_strength,
        provider=f.provider,
    )
    apply = g.node(
        C.IPADAPTER_FACEID.class_type,
        FACEID_APPLY,
        model=loader.out(0),
        ipadapter=loader.out(1),
        image=add_reference(g, spec),
        weight=f.weight,
        weight_faceidv2=f.weight_faceidv2,
        weight_type=f.weight_type,
        combine_embeds=f.combine_embeds,
        start_at=f.start_at,
        end_at=f.end_at,
        embeds_scaling=f.embeds_scaling,
    )
    return apply.out(0)
