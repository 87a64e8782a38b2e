"""The face passes: face detection, the InstantID face post-fix and FaceDetailer.

Both passes re-sample the face crop FaceDetailer finds (``face_yolov8m`` boxes, SAM masks) with
the same detection nodes. Exports the node ids it emits; other modules import these, never
re-spell them.
"""

from __future__ import annotations

from typing import Any

from . import catalog as C
from .graph import Graph, Link
from .models import add_conditioning, add_faceid_model, add_models, add_reference
from .params import DetailerSpec, PipelineSpec

DETECT_BBOX = "detect.bbox"
DETECT_SAM = "detect.sam"
INSTANTID_MODEL = "instantid.model"
INSTANTID_FACE_ANALYSIS = "instantid.faceanalysis"
INSTANTID_PATCH = "instantid.patch"
INSTANTID_DETAILER = "instantid.detailer"
INSTANTID_CONTROLNET = "instantid.controlnet"
INSTANTID_APPLY = "instantid.apply"
INSTANTID_ENCODE = "instantid.encode"
INSTANTID_SAMPLER = "instantid.sampler"
INSTANTID_DECODE = "instantid.decode"
DETAIL = "detail.run"

Source = Any  # a link [node_id, index] or, in node expansion, the live value


def add_detection(g: Graph, spec: PipelineSpec) -> tuple[Link, Link]:
    d = spec.detection
    bbox = g.node(C.ULTRALYTICS_DETECTOR.class_type, DETECT_BBOX, model_name=d.bbox_model)
    sam = g.node(
        C.SAM_LOADER.class_type, DETECT_SAM, model_name=d.sam_model, device_mode=d.sam_device
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


def add_instantid_fix(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """InstantID post-fix at 0.85 on the generated image's face."""
    i = spec.instantid
    models = add_models(g, spec)
    instantid = g.node(
        C.INSTANTID_MODEL_LOADER.class_type, INSTANTID_MODEL, instantid_file=i.instantid_file
    ).out(0)
    analysis = g.node(
        C.INSTANTID_FACE_ANALYSIS.class_type, INSTANTID_FACE_ANALYSIS, provider=i.provider
    ).out(0)
    reference = add_reference(g, spec)
    if i.mode == "detailer":
        patched = g.node(
            C.INSTANTID_ATTENTION_PATCH.class_type,
            INSTANTID_PATCH,
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
            INSTANTID_DETAILER,
            spec,
            image=image,
            model=patched,
            detailer=spec.face_detailer,
            denoise=i.effective_denoise,
            steps=i.steps,
        )
    pos, neg = add_conditioning(g, spec)
    cn = g.node(
        C.CONTROLNET_LOADER.class_type, INSTANTID_CONTROLNET, control_net_name=i.control_net_name
    )
    applied = g.node(
        C.APPLY_INSTANTID.class_type,
        INSTANTID_APPLY,
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
    latent = g.node(C.VAE_ENCODE.class_type, INSTANTID_ENCODE, pixels=image, vae=models.vae)
    s = spec.sampler
    sampled = g.node(
        C.KSAMPLER.class_type,
        INSTANTID_SAMPLER,
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
        C.VAE_DECODE.class_type, INSTANTID_DECODE, samples=sampled.out(0), vae=models.vae
    ).out(0)


def add_face_detailer(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """FaceDetailer at denoise 0.4 with the FaceID-patched model (keeps identity)."""
    d = spec.face_detailer
    return _face_detailer(
        g,
        DETAIL,
        spec,
        image=image,
        model=add_faceid_model(g, spec),
        detailer=d,
        denoise=d.denoise,
        steps=d.steps,
    )
