"""The base stage: LoRA + FaceID (+ PAG, an init image, a pose reference) -> decoded image.

Exports the node ids it emits; other modules import these, never re-spell them.
"""

from __future__ import annotations

from . import catalog as C
from .graph import Graph, Link
from .models import add_conditioning, add_faceid_model, add_models
from .params import PipelineSpec

PAG = "pag.apply"
POSE_IMAGE = "pose.image"
POSE_CANNY = "pose.canny"
POSE_CONTROLNET = "pose.controlnet"
POSE_APPLY = "pose.apply"
INIT_IMAGE = "init.image"
INIT_SCALE = "init.scale"
INIT_ENCODE = "init.encode"
LATENT = "base.latent"
SAMPLER = "base.sampler"
DECODE = "base.decode"


def add_base(g: Graph, spec: PipelineSpec) -> Link:
    """Base generation: LoRA + FaceID (+ PAG, init image, pose reference) → decoded image."""
    models = add_models(g, spec)
    pos, neg = add_conditioning(g, spec)
    model = add_faceid_model(g, spec)
    s = spec.sampler
    if spec.pag.enabled:
        model = g.node(C.PAG.class_type, PAG, model=model, scale=spec.pag.scale).out(0)
    if spec.pose is not None:
        p = spec.pose
        hint = g.node(C.LOAD_IMAGE.class_type, POSE_IMAGE, image=p.image).out(0)
        if p.preprocess == "canny":
            hint = g.node(
                C.CANNY.class_type,
                POSE_CANNY,
                image=hint,
                low_threshold=p.canny_low,
                high_threshold=p.canny_high,
            ).out(0)
        cn = g.node(
            C.CONTROLNET_LOADER.class_type, POSE_CONTROLNET, control_net_name=p.control_net_name
        )
        applied = g.node(
            C.CONTROLNET_APPLY.class_type,
            POSE_APPLY,
            positive=pos,
            negative=neg,
            control_net=cn.out(0),
            image=hint,
            strength=p.strength,
            start_percent=p.start_percent,
            end_percent=p.end_percent,
            vae=models.vae,
        )
        # Only the base sampler gets the hint: in a detailer it would be squeezed onto the crop.
        pos, neg = applied.out(0), applied.out(1)
    if spec.img2img is not None:
        init = g.node(C.LOAD_IMAGE.class_type, INIT_IMAGE, image=spec.img2img.image)
        scaled = g.node(
            C.IMAGE_SCALE.class_type,
            INIT_SCALE,
            image=init.out(0),
            upscale_method="lanczos",
            width=s.width,
            height=s.height,
            crop="center",
        )
        latent = g.node(
            C.VAE_ENCODE.class_type, INIT_ENCODE, pixels=scaled.out(0), vae=models.vae
        ).out(0)
        denoise = spec.img2img.denoise
    else:
        latent = g.node(
            C.EMPTY_LATENT.class_type, LATENT, width=s.width, height=s.height, batch_size=1
        ).out(0)
        denoise = 1.0
    sampled = g.node(
        C.KSAMPLER.class_type,
        SAMPLER,
        model=model,
        seed=s.seed,
        steps=s.steps,
        cfg=s.cfg,
        sampler_name=s.sampler_name,
        scheduler=s.scheduler,
        positive=pos,
        negative=neg,
        latent_image=latent,
        denoise=denoise,
    )
    return g.node(C.VAE_DECODE.class_type, DECODE, samples=sampled.out(0), vae=models.vae).out(0)
