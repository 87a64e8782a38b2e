"""Every name that crosses the pipelines <-> orchestrator line, one spelling each: node types,
input names, the loader model folders and the pipeline's stage names.

Names are transcribed from the recorded ``/object_info`` of ComfyUI 0.3.75 and of the pinned
node packs (``orchestrator/data/object_info/``); a unit test checks each entry against those
recordings, so a typo here fails before it reaches a server. Stage builders refer to these
constants, never to bare strings.

Input rules: every *required* input and every *optional widget* is sent explicitly (FaceDetailer's
``noise_mask_feather`` is 20 in the UI but 0 when omitted from an API prompt); *optional links*
are sent only when connected.

Node *ids* (``base.ckpt``, ``score.run``) are exported by the stage builder that emits them
(``base.py``, ``models.py``, ``face.py``, ``finish.py``). This module owns names only: presets
live in ``params.py``, wiring in the stage builders. ``tests/unit/test_one_spelling.py`` checks
that no other production module spells any of these names as a string literal.
"""

from __future__ import annotations

from dataclasses import dataclass

# Which installable unit provides a node type (keys of the provisioning manifest's node packs).
CORE = "comfyui"
IPADAPTER = "ComfyUI_IPAdapter_plus"
INSTANTID = "ComfyUI_InstantID"
IMPACT = "ComfyUI-Impact-Pack"
IMPACT_SUBPACK = "ComfyUI-Impact-Subpack"
CHARPACK = "charpack_nodes"

# The pipeline's stages, one vocabulary from pack file to report: a pack file's
# ``stages.<name>`` keys, :func:`~charpack_nodes.pipelines.build_stage`'s stages, the macro
# nodes' on/off settings and the report's stage timings. Each is also the ``PipelineSpec`` field
# holding that stage's settings (``STAGE_DETECTION``: face detection, shared by both face passes).
STAGE_BASE = "base"
STAGE_FACEID = "faceid"
STAGE_INSTANTID = "instantid"
STAGE_FACE_DETAILER = "face_detailer"
STAGE_UPSCALE = "upscale"
STAGE_PAG = "pag"
STAGE_DETECTION = "detection"

# ComfyUI's models/ folders (``folder_paths`` names) that charpack's loaders read from.
FOLDER_CHECKPOINTS = "checkpoints"
FOLDER_LORAS = "loras"
FOLDER_VAE = "vae"
FOLDER_CONTROLNET = "controlnet"
FOLDER_CLIP_VISION = "clip_vision"
FOLDER_UPSCALE_MODELS = "upscale_models"
FOLDER_IPADAPTER = "ipadapter"
FOLDER_INSTANTID = "instantid"
FOLDER_SAMS = "sams"
FOLDER_ULTRALYTICS = "ultralytics"
FOLDER_INSIGHTFACE = "insightface"  # registered by charpack_nodes (extension.py) when missing


@dataclass(frozen=True)
class NodeSpec:
    """Names of one node type: its inputs (by kind) and its outputs (name, type)."""

    class_type: str
    pack: str
    required: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...] = ()
    optional_widgets: tuple[str, ...] = ()
    optional_links: tuple[str, ...] = ()
    output_node: bool = False

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input name charpack may send, in the node's own order."""
        return self.required + self.optional_widgets + self.optional_links

    @property
    def explicit(self) -> tuple[str, ...]:
        """Inputs that must always be present in an emitted node."""
        return self.required + self.optional_widgets

    def output(self, name: str) -> int:
        """Index of the output called ``name`` (as in ``/object_info``'s ``output_name``)."""
        for index, (out_name, _type) in enumerate(self.outputs):
            if out_name == name:
                return index
        raise KeyError(f"{self.class_type} has no output {name!r}")


def _o(*pairs: str) -> tuple[tuple[str, str], ...]:
    """Outputs given as "name:TYPE" (or just "TYPE" when the name is the type)."""
    result = []
    for pair in pairs:
        name, _, type_ = pair.partition(":")
        result.append((name, type_ or name))
    return tuple(result)


# --- ComfyUI core (0.3.75) -------------------------------------------------------------------

CHECKPOINT_LOADER = NodeSpec(
    "CheckpointLoaderSimple", CORE, ("ckpt_name",), _o("MODEL", "CLIP", "VAE")
)
LORA_LOADER = NodeSpec(
    "LoraLoader",
    CORE,
    ("model", "clip", "lora_name", "strength_model", "strength_clip"),
    _o("MODEL", "CLIP"),
)
CLIP_TEXT_ENCODE = NodeSpec("CLIPTextEncode", CORE, ("text", "clip"), _o("CONDITIONING"))
EMPTY_LATENT = NodeSpec("EmptyLatentImage", CORE, ("width", "height", "batch_size"), _o("LATENT"))
KSAMPLER = NodeSpec(
    "KSampler",
    CORE,
    (
        "model",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "latent_image",
        "denoise",
    ),
    _o("LATENT"),
)
VAE_DECODE = NodeSpec("VAEDecode", CORE, ("samples", "vae"), _o("IMAGE"))
VAE_ENCODE = NodeSpec("VAEEncode", CORE, ("pixels", "vae"), _o("LATENT"))
LOAD_IMAGE = NodeSpec("LoadImage", CORE, ("image",), _o("IMAGE", "MASK"))
IMAGE_BATCH = NodeSpec("ImageBatch", CORE, ("image1", "image2"), _o("IMAGE"))
SAVE_IMAGE = NodeSpec("SaveImage", CORE, ("images", "filename_prefix"), output_node=True)
PREVIEW_IMAGE = NodeSpec("PreviewImage", CORE, ("images",), output_node=True)
IMAGE_SCALE = NodeSpec(
    "ImageScale",
    CORE,
    ("image", "upscale_method", "width", "height", "crop"),
    _o("IMAGE"),
)
IMAGE_SCALE_BY = NodeSpec(
    "ImageScaleBy", CORE, ("image", "upscale_method", "scale_by"), _o("IMAGE")
)
CONTROLNET_LOADER = NodeSpec("ControlNetLoader", CORE, ("control_net_name",), _o("CONTROL_NET"))
CONTROLNET_APPLY = NodeSpec(
    "ControlNetApplyAdvanced",
    CORE,
    ("positive", "negative", "control_net", "image", "strength", "start_percent", "end_percent"),
    _o("positive:CONDITIONING", "negative:CONDITIONING"),
    optional_links=("vae",),
)
CANNY = NodeSpec("Canny", CORE, ("image", "low_threshold", "high_threshold"), _o("IMAGE"))
UPSCALE_MODEL_LOADER = NodeSpec("UpscaleModelLoader", CORE, ("model_name",), _o("UPSCALE_MODEL"))
IMAGE_UPSCALE_WITH_MODEL = NodeSpec(
    "ImageUpscaleWithModel", CORE, ("upscale_model", "image"), _o("IMAGE")
)
PAG = NodeSpec("PerturbedAttentionGuidance", CORE, ("model", "scale"), _o("MODEL"))

# ComfyUI 0.3.75's LoRA training nodes (comfy_extras/nodes_train.py, nodes_dataset.py), which
# charpack's character training drives (every TrainLoraNode input is sent explicitly).
TRAIN_LORA = NodeSpec(
    "TrainLoraNode",
    CORE,
    ("model", "latents", "positive", "batch_size", "grad_accumulation_steps", "steps",
     "learning_rate", "rank", "optimizer", "loss_function", "seed", "training_dtype",
     "lora_dtype", "algorithm", "gradient_checkpointing", "existing_lora"),
    _o("model:MODEL", "lora:LORA_MODEL", "loss_map:LOSS_MAP", "steps:INT"),
)  # fmt: skip
LOAD_IMAGE_TEXT_DATASET = NodeSpec(
    "LoadImageTextDataSetFromFolder", CORE, ("folder",), _o("images:IMAGE", "texts:STRING")
)
MAKE_TRAINING_DATASET = NodeSpec(
    "MakeTrainingDataset",
    CORE,
    ("images", "vae", "clip"),
    _o("latents:LATENT", "conditioning:CONDITIONING"),
    # A STRING widget in /object_info, wired from LoadImageTextDataSetFromFolder's texts.
    optional_widgets=("texts",),
)

# --- cubiq/ComfyUI_IPAdapter_plus ------------------------------------------------------------

IPADAPTER_UNIFIED_LOADER_FACEID = NodeSpec(
    "IPAdapterUnifiedLoaderFaceID",
    IPADAPTER,
    ("model", "preset", "lora_strength", "provider"),
    _o("MODEL", "ipadapter:IPADAPTER"),
    optional_links=("ipadapter",),
)
IPADAPTER_FACEID = NodeSpec(
    "IPAdapterFaceID",
    IPADAPTER,
    (
        "model",
        "ipadapter",
        "image",
        "weight",
        "weight_faceidv2",
        "weight_type",
        "combine_embeds",
        "start_at",
        "end_at",
        "embeds_scaling",
    ),
    _o("MODEL", "face_image:IMAGE"),
    optional_links=("image_negative", "attn_mask", "clip_vision", "insightface"),
)

# --- cubiq/ComfyUI_InstantID -----------------------------------------------------------------

INSTANTID_MODEL_LOADER = NodeSpec(
    "InstantIDModelLoader", INSTANTID, ("instantid_file",), _o("INSTANTID")
)
INSTANTID_FACE_ANALYSIS = NodeSpec(
    "InstantIDFaceAnalysis", INSTANTID, ("provider",), _o("FACEANALYSIS")
)
INSTANTID_ATTENTION_PATCH = NodeSpec(
    "InstantIDAttentionPatch",
    INSTANTID,
    ("instantid", "insightface", "image", "model", "weight", "start_at", "end_at", "noise"),
    _o("MODEL", "FACE_EMBEDS"),
    optional_links=("mask",),
)
APPLY_INSTANTID = NodeSpec(
    "ApplyInstantID",
    INSTANTID,
    (
        "instantid",
        "insightface",
        "control_net",
        "image",
        "model",
        "positive",
        "negative",
        "weight",
        "start_at",
        "end_at",
    ),
    _o("MODEL", "positive:CONDITIONING", "negative:CONDITIONING"),
    optional_links=("image_kps", "mask"),
)

# --- ltdrdata/ComfyUI-Impact-Pack and -Subpack -----------------------------------------------

SAM_LOADER = NodeSpec("SAMLoader", IMPACT, ("model_name", "device_mode"), _o("SAM_MODEL"))
ULTRALYTICS_DETECTOR = NodeSpec(
    "UltralyticsDetectorProvider",
    IMPACT_SUBPACK,
    ("model_name",),
    _o("BBOX_DETECTOR", "SEGM_DETECTOR"),
)
FACE_DETAILER = NodeSpec(
    "FaceDetailer",
    IMPACT,
    (
        "image",
        "model",
        "clip",
        "vae",
        "guide_size",
        "guide_size_for",
        "max_size",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "denoise",
        "feather",
        "noise_mask",
        "force_inpaint",
        "bbox_threshold",
        "bbox_dilation",
        "bbox_crop_factor",
        "sam_detection_hint",
        "sam_dilation",
        "sam_threshold",
        "sam_bbox_expansion",
        "sam_mask_hint_threshold",
        "sam_mask_hint_use_negative",
        "drop_size",
        "bbox_detector",
        "wildcard",
        "cycle",
    ),
    _o(
        "image:IMAGE",
        "cropped_refined:IMAGE",
        "cropped_enhanced_alpha:IMAGE",
        "mask:MASK",
        "detailer_pipe:DETAILER_PIPE",
        "cnet_images:IMAGE",
    ),
    optional_widgets=("inpaint_model", "noise_mask_feather", "tiled_encode", "tiled_decode"),
    optional_links=("sam_model_opt", "segm_detector_opt", "detailer_hook", "scheduler_func_opt"),
)

# --- charpack's own nodes (custom_nodes/charpack_nodes) --------------------------------------

IDENTITY_SCORE = NodeSpec(
    "CharpackIdentityScore",
    CHARPACK,
    ("images", "model_pack", "provider"),
    _o("images:IMAGE", "score:FLOAT"),
    optional_links=("reference", "character"),
    output_node=True,
)
IDENTITY_GATE = NodeSpec(
    "CharpackIdentityGate",
    CHARPACK,
    ("images", "threshold"),
    _o("images:IMAGE"),
    optional_links=("score", "character"),
)
SAVE_PACK = NodeSpec(
    "CharpackSavePack",
    CHARPACK,
    ("images", "pack", "scene", "name", "compress_level"),
    optional_widgets=("overwrite", "seed", "parameters"),
    optional_links=("score",),
    output_node=True,
)
SAVE_TRAINED_LORA = NodeSpec(
    "CharpackSaveTrainedLoRA",
    CHARPACK,
    ("lora", "loss", "steps", "name", "metadata"),
    output_node=True,
)
FACE_CHECK = NodeSpec("CharpackFaceCheck", CHARPACK, ("image", "label"), output_node=True)

ALL: tuple[NodeSpec, ...] = (
    CHECKPOINT_LOADER,
    LORA_LOADER,
    CLIP_TEXT_ENCODE,
    EMPTY_LATENT,
    KSAMPLER,
    VAE_DECODE,
    VAE_ENCODE,
    LOAD_IMAGE,
    IMAGE_BATCH,
    IMAGE_SCALE,
    IMAGE_SCALE_BY,
    SAVE_IMAGE,
    PREVIEW_IMAGE,
    CONTROLNET_LOADER,
    CONTROLNET_APPLY,
    CANNY,
    UPSCALE_MODEL_LOADER,
    IMAGE_UPSCALE_WITH_MODEL,
    PAG,
    TRAIN_LORA,
    LOAD_IMAGE_TEXT_DATASET,
    MAKE_TRAINING_DATASET,
    IPADAPTER_UNIFIED_LOADER_FACEID,
    IPADAPTER_FACEID,
    INSTANTID_MODEL_LOADER,
    INSTANTID_FACE_ANALYSIS,
    INSTANTID_ATTENTION_PATCH,
    APPLY_INSTANTID,
    SAM_LOADER,
    ULTRALYTICS_DETECTOR,
    FACE_DETAILER,
    IDENTITY_SCORE,
    IDENTITY_GATE,
    SAVE_PACK,
    SAVE_TRAINED_LORA,
    FACE_CHECK,
)

_BY_TYPE = {spec.class_type: spec for spec in ALL}

# (class_type, input) -> models/ folder, for loaders whose file a user must put there by hand
# (also loaders charpack does not emit itself: a hand-made workflow gets the same hint).
LOADER_FOLDERS: dict[tuple[str, str], str] = {
    (CHECKPOINT_LOADER.class_type, "ckpt_name"): FOLDER_CHECKPOINTS,
    (LORA_LOADER.class_type, "lora_name"): FOLDER_LORAS,
    ("LoraLoaderModelOnly", "lora_name"): FOLDER_LORAS,
    ("VAELoader", "vae_name"): FOLDER_VAE,
    (CONTROLNET_LOADER.class_type, "control_net_name"): FOLDER_CONTROLNET,
    ("CLIPVisionLoader", "clip_name"): FOLDER_CLIP_VISION,
    (UPSCALE_MODEL_LOADER.class_type, "model_name"): FOLDER_UPSCALE_MODELS,
    ("IPAdapterModelLoader", "ipadapter_file"): FOLDER_IPADAPTER,
    (INSTANTID_MODEL_LOADER.class_type, "instantid_file"): FOLDER_INSTANTID,
    (SAM_LOADER.class_type, "model_name"): FOLDER_SAMS,
    (ULTRALYTICS_DETECTOR.class_type, "model_name"): FOLDER_ULTRALYTICS,
}

# Node types the project never emits, whatever the parameters (ImageSharpen amplifies grain).
FORBIDDEN: frozenset[str] = frozenset({"ImageSharpen"})


def get(class_type: str) -> NodeSpec | None:
    """The catalogue entry for ``class_type``, or None for a type charpack does not emit."""
    return _BY_TYPE.get(class_type)
