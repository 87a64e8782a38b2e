"""The last stages: the 4x upscale, the identity score and the saver.

Exports the node ids it emits (the orchestrator reads the score from :data:`SCORE`'s UI output);
other modules import these, never re-spell them.
"""

from __future__ import annotations

from typing import Any

from . import catalog as C
from .graph import Graph, Link
from .models import add_reference
from .params import PipelineSpec
from .prompts import parameters_text

UPSCALE_MODEL = "upscale.model"
UPSCALE = "upscale.run"
UPSCALE_RESIZE = "upscale.resize"
SCORE = "score.run"
SAVE = "save.run"
PREVIEW = "save.preview"

Source = Any  # a link [node_id, index] or, in node expansion, the live value


def add_upscale(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """4x-UltraSharp (a GAN upscale, no diffusion at 4K), optionally resized down after."""
    u = spec.upscale
    loader = g.node(C.UPSCALE_MODEL_LOADER.class_type, UPSCALE_MODEL, model_name=u.model_name)
    out = g.node(
        C.IMAGE_UPSCALE_WITH_MODEL.class_type,
        UPSCALE,
        upscale_model=loader.out(0),
        image=image,
    ).out(0)
    if u.output_scale != 1.0:
        out = g.node(
            C.IMAGE_SCALE_BY.class_type,
            UPSCALE_RESIZE,
            image=out,
            upscale_method="lanczos",
            scale_by=u.output_scale,
        ).out(0)
    return out


def add_identity_score(g: Graph, spec: PipelineSpec, image: Source, node_id: str = SCORE) -> Link:
    """Score ``image`` against the face references (the final score at :data:`SCORE`; the
    early gate's score uses the same node under its own id)."""
    ident = spec.identity
    node = g.node(
        C.IDENTITY_SCORE.class_type,
        node_id,
        images=image,
        reference=add_reference(g, spec),
        model_pack=ident.model_pack,
        provider=ident.provider,
    )
    return node.out(C.IDENTITY_SCORE.output("score"))


def add_output(g: Graph, spec: PipelineSpec, image: Source, score: Link | None) -> None:
    o = spec.output
    if o.save == "pack":
        g.node(
            C.SAVE_PACK.class_type,
            SAVE,
            images=image,
            pack=o.pack,
            scene=o.scene,
            name=o.name,
            seed=spec.sampler.seed,
            parameters=parameters_text(spec),
            compress_level=o.compress_level,
            overwrite=False,  # every attempt writes its own files (names carry the prompt id)
            score=score,
        )
    elif o.save == "image":
        g.node(
            C.SAVE_IMAGE.class_type,
            SAVE,
            images=image,
            filename_prefix=f"{o.pack}/{o.scene}/{o.name}",
        )
    elif o.save == "preview":
        g.node(C.PREVIEW_IMAGE.class_type, PREVIEW, images=image)
