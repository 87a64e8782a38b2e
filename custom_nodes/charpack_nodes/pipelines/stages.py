"""Stage builders: the pipeline's wiring, written once for all three uses.

The orchestrator builds API-format JSON with :func:`build_pipeline`; the node pack's macro nodes
expand into :func:`build_stage` / :func:`build_pipeline` subgraphs (with ``prefix`` set to the
parent node's id and live values in place of links); ``workflows/api/*.json`` are generated from
both. Node ids are stable and say what a node is (``base.ckpt``, ``faceid.apply``,
``upscale.run``); shared nodes (loaders, prompts, detectors) are created once and reused because
:meth:`Graph.node` returns the existing node for an id it already holds.

Inputs of type ``Source`` are either a link ``[node_id, index]`` or, in node expansion, the live
value ComfyUI handed to the macro node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import catalog as C
from .graph import Graph, Link
from .params import DetailerSpec, PipelineSpec
from .prompts import negative_prompt, parameters_text, positive_prompt

Source = Any
STAGES: tuple[str, ...] = ("base", "instantid", "face_detailer", "upscale")


@dataclass(frozen=True)
class Built:
    """A built graph and links to its final image (and identity score, when scored)."""

    graph: Graph
    image: Source
    score: Link | None = None


@dataclass(frozen=True)
class Models:
    model: Link
    clip: Link
    vae: Link


# --- shared pieces (idempotent: same ids, same inputs) ---------------------------------------


def add_models(g: Graph, spec: PipelineSpec) -> Models:
    """Checkpoint + character LoRA (0.7 on model and clip)."""
    c = spec.character
    ckpt = g.node(C.CHECKPOINT_LOADER.class_type, "base.ckpt", ckpt_name=c.checkpoint)
    model, clip, vae = ckpt.out(0), ckpt.out(1), ckpt.out(2)
    if c.lora is not None:
        lora = g.node(
            C.LORA_LOADER.class_type,
            "base.lora",
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
    pos = g.node(C.CLIP_TEXT_ENCODE.class_type, "base.pos", text=positive_prompt(spec), clip=clip)
    neg = g.node(C.CLIP_TEXT_ENCODE.class_type, "base.neg", text=negative_prompt(spec), clip=clip)
    return pos.out(0), neg.out(0)


def add_reference(g: Graph, spec: PipelineSpec) -> Link:
    """The face reference(s), batched into one IMAGE when there are several."""
    names = spec.character.face_images
    first = g.node(C.LOAD_IMAGE.class_type, "ref.face", image=names[0]).out(0)
    for index, name in enumerate(names[1:], start=2):
        other = g.node(C.LOAD_IMAGE.class_type, f"ref.face{index}", image=name).out(0)
        first = g.node(
            C.IMAGE_BATCH.class_type, f"ref.batch{index}", image1=first, image2=other
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
        "faceid.loader",
        model=model,
        preset=f.preset,
        lora_strength=f.lora_strength,
        provider=f.provider,
    )
    apply = g.node(
        C.IPADAPTER_FACEID.class_type,
        "faceid.apply",
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


def add_detection(g: Graph, spec: PipelineSpec) -> tuple[Link, Link]:
    d = spec.detection
    bbox = g.node(C.ULTRALYTICS_DETECTOR.class_type, "detect.bbox", model_name=d.bbox_model)
    sam = g.node(
        C.SAM_LOADER.class_type, "detect.sam", model_name=d.sam_model, device_mode=d.sam_device
    )
    return bbox.out(0), sam.out(0)


def _face_detailer(
    g: Graph,
    node_id: str,
    spec: PipelineSpec,
    *,
    image: Source,
    model: Link,
    detailer: DetailerSpec,
    denoise: float,
    steps: int,
) -> Link:
    models = add_models(g, spec)
    pos, neg = add_conditioning(g, spec)
    bbox, sam = add_detection(g, spec)
    d, s = spec.detection, spec.sampler
    node = g.node(
        C.FACE_DETAILER.class_type,
        node_id,
        image=image,
        model=model,
        clip=models.clip,
        vae=models.vae,
        guide_size=detailer.guide_size,
        guide_size_for=detailer.guide_size_for_bbox,
        max_size=detailer.max_size,
        seed=s.seed,
        steps=steps,
        cfg=detailer.cfg if detailer.cfg is not None else s.cfg,
        sampler_name=detailer.sampler_name or s.sampler_name,
        scheduler=detailer.scheduler or s.scheduler,
        positive=pos,
        negative=neg,
        denoise=denoise,
        feather=detailer.feather,
        noise_mask=detailer.noise_mask,
        force_inpaint=detailer.force_inpaint,
        bbox_threshold=d.bbox_threshold,
        bbox_dilation=d.bbox_dilation,
        bbox_crop_factor=d.bbox_crop_factor,
        sam_detection_hint=d.sam_detection_hint,
        sam_dilation=d.sam_dilation,
        sam_threshold=d.sam_threshold,
        sam_bbox_expansion=d.sam_bbox_expansion,
        sam_mask_hint_threshold=d.sam_mask_hint_threshold,
        sam_mask_hint_use_negative=d.sam_mask_hint_use_negative,
        drop_size=d.drop_size,
        bbox_detector=bbox,
        wildcard=detailer.wildcard,
        cycle=detailer.cycle,
        sam_model_opt=sam,
        inpaint_model=detailer.inpaint_model,
        noise_mask_feather=detailer.noise_mask_feather,
        tiled_encode=detailer.tiled_encode,
        tiled_decode=detailer.tiled_decode,
    )
    return node.out(0)


# --- stages ----------------------------------------------------------------------------------


def add_base(g: Graph, spec: PipelineSpec) -> Link:
    """Base generation: LoRA + FaceID (+ PAG, init image, pose reference) → decoded image."""
    models = add_models(g, spec)
    pos, neg = add_conditioning(g, spec)
    model = add_faceid_model(g, spec)
    s = spec.sampler
    if spec.pag.enabled:
        model = g.node(C.PAG.class_type, "pag.apply", model=model, scale=spec.pag.scale).out(0)
    if spec.pose is not None:
        p = spec.pose
        hint = g.node(C.LOAD_IMAGE.class_type, "pose.image", image=p.image).out(0)
        if p.preprocess == "canny":
            hint = g.node(
                C.CANNY.class_type,
                "pose.canny",
                image=hint,
                low_threshold=p.canny_low,
                high_threshold=p.canny_high,
            ).out(0)
        cn = g.node(
            C.CONTROLNET_LOADER.class_type, "pose.controlnet", control_net_name=p.control_net_name
        )
        applied = g.node(
            C.CONTROLNET_APPLY.class_type,
            "pose.apply",
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
        init = g.node(C.LOAD_IMAGE.class_type, "init.image", image=spec.img2img.image)
        scaled = g.node(
            C.IMAGE_SCALE.class_type,
            "init.scale",
            image=init.out(0),
            upscale_method="lanczos",
            width=s.width,
            height=s.height,
            crop="center",
        )
        latent = g.node(
            C.VAE_ENCODE.class_type, "init.encode", pixels=scaled.out(0), vae=models.vae
        ).out(0)
        denoise = spec.img2img.denoise
    else:
        latent = g.node(
            C.EMPTY_LATENT.class_type, "base.latent", width=s.width, height=s.height, batch_size=1
        ).out(0)
        denoise = 1.0
    sampled = g.node(
        C.KSAMPLER.class_type,
        "base.sampler",
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
    return g.node(
        C.VAE_DECODE.class_type, "base.decode", samples=sampled.out(0), vae=models.vae
    ).out(0)


def add_instantid_fix(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """InstantID post-fix at 0.85 on the generated image's face."""
    i = spec.instantid
    models = add_models(g, spec)
    instantid = g.node(
        C.INSTANTID_MODEL_LOADER.class_type, "instantid.model", instantid_file=i.instantid_file
    ).out(0)
    analysis = g.node(
        C.INSTANTID_FACE_ANALYSIS.class_type, "instantid.faceanalysis", provider=i.provider
    ).out(0)
    reference = add_reference(g, spec)
    if i.mode == "detailer":
        patched = g.node(
            C.INSTANTID_ATTENTION_PATCH.class_type,
            "instantid.patch",
            instantid=instantid,
            insightface=analysis,
            image=reference,
            model=models.model,
            weight=i.weight,
            start_at=i.start_at,
            end_at=i.end_at,
            noise=i.noise,
        ).out(0)
        return _face_detailer(
            g,
            "instantid.detailer",
            spec,
            image=image,
            model=patched,
            detailer=spec.face_detailer,
            denoise=i.effective_denoise,
            steps=i.steps,
        )
    pos, neg = add_conditioning(g, spec)
    cn = g.node(
        C.CONTROLNET_LOADER.class_type, "instantid.controlnet", control_net_name=i.control_net_name
    )
    applied = g.node(
        C.APPLY_INSTANTID.class_type,
        "instantid.apply",
        instantid=instantid,
        insightface=analysis,
        control_net=cn.out(0),
        image=reference,
        model=models.model,
        positive=pos,
        negative=neg,
        weight=i.weight,
        start_at=i.start_at,
        end_at=i.end_at,
        image_kps=image,  # keypoints from the generated image, not the reference photo
    )
    latent = g.node(C.VAE_ENCODE.class_type, "instantid.encode", pixels=image, vae=models.vae)
    s = spec.sampler
    sampled = g.node(
        C.KSAMPLER.class_type,
        "instantid.sampler",
        model=applied.out(0),
        seed=s.seed,
        steps=i.steps,
        cfg=s.cfg,
        sampler_name=s.sampler_name,
        scheduler=s.scheduler,
        positive=applied.out(1),
        negative=applied.out(2),
        latent_image=latent.out(0),
        denoise=i.effective_denoise,
    )
    return g.node(
        C.VAE_DECODE.class_type, "instantid.decode", samples=sampled.out(0), vae=models.vae
    ).out(0)


def add_face_detailer(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """FaceDetailer at denoise 0.4 with the FaceID-patched model (keeps identity)."""
    d = spec.face_detailer
    return _face_detailer(
        g,
        "detail.run",
        spec,
        image=image,
        model=add_faceid_model(g, spec),
        detailer=d,
        denoise=d.denoise,
        steps=d.steps,
    )


def add_upscale(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """4x-UltraSharp (a GAN upscale, no diffusion at 4K), optionally resized down after."""
    u = spec.upscale
    loader = g.node(C.UPSCALE_MODEL_LOADER.class_type, "upscale.model", model_name=u.model_name)
    out = g.node(
        C.IMAGE_UPSCALE_WITH_MODEL.class_type,
        "upscale.run",
        upscale_model=loader.out(0),
        image=image,
    ).out(0)
    if u.output_scale != 1.0:
        out = g.node(
            C.IMAGE_SCALE_BY.class_type,
            "upscale.resize",
            image=out,
            upscale_method="lanczos",
            scale_by=u.output_scale,
        ).out(0)
    return out


def add_identity_score(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    ident = spec.identity
    node = g.node(
        C.IDENTITY_SCORE.class_type,
        "score.run",
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
            "save.run",
            images=image,
            pack=o.pack,
            scene=o.scene,
            name=o.name,
            seed=spec.sampler.seed,
            parameters=parameters_text(spec),
            compress_level=o.compress_level,
            score=score,
        )
    elif o.save == "image":
        g.node(
            C.SAVE_IMAGE.class_type,
            "save.run",
            images=image,
            filename_prefix=f"{o.pack}/{o.scene}/{o.name}",
        )
    elif o.save == "preview":
        g.node(C.PREVIEW_IMAGE.class_type, "save.preview", images=image)


# --- whole graphs ----------------------------------------------------------------------------


def build_pipeline(spec: PipelineSpec, *, prefix: str = "", outputs: bool = True) -> Built:
    """The full pipeline for one job; stages switched off in ``spec`` are left out.

    ``outputs=False`` leaves out the identity score and the saver (the macro node's case: the
    user wires their own).
    """
    g = Graph(prefix)
    image: Source = add_base(g, spec)
    if spec.instantid.enabled:
        image = add_instantid_fix(g, spec, image)
    if spec.face_detailer.enabled:
        image = add_face_detailer(g, spec, image)
    if spec.upscale.enabled:
        image = add_upscale(g, spec, image)
    return _finish(g, spec, image, outputs)


def build_stage(
    stage: str,
    spec: PipelineSpec,
    *,
    image: Source = None,
    input_image: str = "input.png",
    prefix: str = "",
    outputs: bool = True,
) -> Built:
    """One stage on its own. Stages after ``base`` work on ``image`` (a link or live value) or,
    when it is None, on ``input_image`` loaded from the server's input folder."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    g = Graph(prefix)
    if stage == "base":
        result: Source = add_base(g, spec)
    else:
        if image is None:
            image = g.node(C.LOAD_IMAGE.class_type, "input.image", image=input_image).out(0)
        if stage == "instantid":
            result = add_instantid_fix(g, spec, image)
        elif stage == "face_detailer":
            result = add_face_detailer(g, spec, image)
        else:
            result = add_upscale(g, spec, image)
    return _finish(g, spec, result, outputs)


def _finish(g: Graph, spec: PipelineSpec, image: Source, outputs: bool) -> Built:
    score = None
    if outputs:
        if spec.identity.enabled:
            score = add_identity_score(g, spec, image)
        add_output(g, spec, image, score)
    forbidden = [n.id for n in g if n.class_type in C.FORBIDDEN]
    if forbidden:  # pragma: no cover - guarded by construction, kept as a last line of defence
        raise AssertionError(f"forbidden node types emitted: {forbidden}")
    return Built(graph=g, image=image, score=score)
