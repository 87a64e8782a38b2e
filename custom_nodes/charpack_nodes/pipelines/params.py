"""Frozen parameter types holding the pipeline's presets, with range checks.

The presets are the pipeline its users settled on after many failed alternatives (see
``docs/pipeline.md``): BigLove XL + character LoRA at 0.7 (model and clip), CFG 4.0 at 832×1216,
one IP-Adapter FaceID Plus V2, an InstantID face post-fix at 0.85, FaceDetailer at denoise 0.4 and
4x-UltraSharp. Change a default here and every emitted graph, node default and generated workflow
follows.

Each type checks its own ranges in ``__post_init__`` and raises :class:`ParameterError` naming the
field, the allowed range and the value; a numeric field declares its range on the field
(:func:`~.checks.ranged`), where the macro nodes' widgets read it. The checks live in
``checks.py``; what a scene adds (init image, pose) and the output in ``scene.py`` (re-exported
here). Wiring lives in the stage builders; names in ``catalog.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from . import catalog as C
from .checks import ParameterError as ParameterError  # re-exported
from .checks import _choice, _int_range, _name, _range, _text, check_range, ranged
from .checks import shown as shown  # re-exported
from .scene import IDENTITY_MODEL_PACKS as IDENTITY_MODEL_PACKS  # re-exported
from .scene import IDENTITY_THRESHOLD
from .scene import POSE_PREPROCESSORS as POSE_PREPROCESSORS  # re-exported
from .scene import PROVIDERS as PROVIDERS  # re-exported
from .scene import SAVE_MODES as SAVE_MODES  # re-exported
from .scene import IdentitySpec as IdentitySpec  # re-exported
from .scene import Img2ImgSpec as Img2ImgSpec  # re-exported
from .scene import OutputSpec as OutputSpec  # re-exported
from .scene import PoseSpec as PoseSpec  # re-exported

# Sampler and scheduler names accepted by both KSampler (ComfyUI 0.3.75) and FaceDetailer.
SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
SCHEDULERS: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip
INSTANTID_MODES: tuple[str, ...] = ("detailer", "img2img")
SAM_DEVICES: tuple[str, ...] = ("AUTO", "Prefer GPU", "CPU")
SAM_HINTS: tuple[str, ...] = (
    "center-1", "horizontal-2", "vertical-2", "rect-4", "diamond-4", "mask-area", "mask-points",
    "mask-point-bbox", "none",
)  # fmt: skip
MAX_SEED = 2**64 - 1
SIZE_MULTIPLE = 8  # width and height: SDXL works in 8-pixel latent cells

# How far below the identity threshold the early gate stops an attempt: "clearly below", so
# the detailer (denoise 0.4, identity-preserving) is not what would have lifted it over.
EARLY_GATE_MARGIN = 0.10

DEFAULT_NEGATIVE = (
    "cartoon, illustration, 3d render, plastic skin, airbrushed, deformed face, extra fingers, "
    "blurry, low quality, watermark, text"
)


# --- the character ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """The character's identity LoRA; 0.7 lets the checkpoint breathe (1.0 was too rigid)."""

    name: str = "character_lora.safetensors"
    strength_model: float = ranged(0.7, 0.0, 2.0)
    strength_clip: float = ranged(0.7, 0.0, 2.0)

    def __post_init__(self) -> None:
        _name("lora.name", self.name)
        check_range("lora.strength_model", self, "strength_model")
        check_range("lora.strength_clip", self, "strength_clip")


@dataclass(frozen=True)
class CharacterSpec:
    """Who is pictured: checkpoint, LoRA, trigger word, face references and prompt parts.

    ``face_images`` are names in the server's input folder (the orchestrator uploads the pack's
    reference files and substitutes the names the server returns).
    """

    checkpoint: str = "bigLoveXL.safetensors"
    lora: LoraSpec | None = field(default_factory=LoraSpec)
    trigger: str = ""
    face_images: tuple[str, ...] = ("face.png",)
    attributes: tuple[tuple[str, str], ...] = ()
    prompt_prefix: str = ""
    prompt_suffix: str = ""
    negative: str = DEFAULT_NEGATIVE

    def __post_init__(self) -> None:
        _name("character.checkpoint", self.checkpoint)
        if not self.face_images:
            raise ParameterError("character.face_images", "needs at least one face reference")
        for image in self.face_images:
            _name("character.face_images", image)
        for attr, value in self.attributes:
            _text(f"character.attributes.{attr}", value)
        for name in ("trigger", "prompt_prefix", "prompt_suffix", "negative"):
            _text(f"character.{name}", getattr(self, name))


# --- stages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSpec:
    """Base generation: CFG 4.0 (7 made SDXL grainy), portrait 832×1216."""

    seed: int = 0
    steps: int = ranged(30, 1, 200)
    cfg: float = ranged(4.0, 1.0, 30.0)
    sampler_name: str = "dpmpp_2m_sde"
    scheduler: str = "karras"
    width: int = ranged(832, 256, 2048)
    height: int = ranged(1216, 256, 2048)

    def __post_init__(self) -> None:
        _int_range("seed", self.seed, 0, MAX_SEED)
        check_range("steps", self, "steps")
        check_range("cfg", self, "cfg")
        _choice("sampler", self.sampler_name, SAMPLER_NAMES)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        for name in ("width", "height"):
            value = getattr(self, name)
            check_range(name, self, name)
            if value % SIZE_MULTIPLE:
                raise ParameterError(name, f"must be a multiple of {SIZE_MULTIPLE}, got {value}")


@dataclass(frozen=True)
class FaceIDSpec:
    """One IP-Adapter FaceID Plus V2 (SDXL), face only; style comes from the prompt."""

    enabled: bool = True
    preset: str = "FACEID PLUS V2"
    lora_strength: float = 0.6
    provider: str = "CPU"
    weight: float = ranged(0.8, 0.0, 3.0)
    weight_faceidv2: float = 1.0
    weight_type: str = "linear"
    combine_embeds: str = "average"
    start_at: float = 0.0
    end_at: float = 1.0
    embeds_scaling: str = "V only"

    def __post_init__(self) -> None:
        _choice("faceid.preset", self.preset, ("FACEID PLUS V2",))
        _range("faceid.lora_strength", self.lora_strength, 0.0, 1.0)
        _choice("faceid.provider", self.provider, PROVIDERS)
        check_range("faceid.weight", self, "weight")
        _range("faceid.weight_faceidv2", self.weight_faceidv2, 0.0, 5.0)
        _choice("faceid.weight_type", self.weight_type, ("linear", "ease in", "ease out"))
        _choice("faceid.combine_embeds", self.combine_embeds, ("concat", "average", "norm average"))
        _range("faceid.start_at", self.start_at, 0.0, 1.0)
        _range("faceid.end_at", self.end_at, 0.0, 1.0)
        if self.start_at >= self.end_at:
            raise ParameterError("faceid.end_at", "must be greater than start_at")
        _choice("faceid.embeds_scaling", self.embeds_scaling, ("V only", "K+V"))


@dataclass(frozen=True)
class DetectionSpec:
    """How faces are found for both detailer passes (bbox face_yolov8m, SAM ViT-B masks).

    No segm detector: FaceDetailer ignores it whenever a SAM model is connected.
    """

    bbox_model: str = "bbox/face_yolov8m.pt"
    sam_model: str = "sam_vit_b_01ec64.pth"
    sam_device: str = "AUTO"
    bbox_threshold: float = 0.5
    bbox_dilation: int = 10
    bbox_crop_factor: float = 3.0
    drop_size: int = 10
    sam_detection_hint: str = "center-1"
    sam_dilation: int = 0
    sam_threshold: float = 0.93
    sam_bbox_expansion: int = 0
    sam_mask_hint_threshold: float = 0.7
    sam_mask_hint_use_negative: str = "False"

    def __post_init__(self) -> None:
        _name("detection.bbox_model", self.bbox_model)
        if not self.bbox_model.startswith("bbox/"):
            raise ParameterError(
                "detection.bbox_model", f"must be a bbox/… detector, got {shown(self.bbox_model)}"
            )
        _name("detection.sam_model", self.sam_model)
        _choice("detection.sam_device", self.sam_device, SAM_DEVICES)
        _range("detection.bbox_threshold", self.bbox_threshold, 0.0, 1.0)
        _int_range("detection.bbox_dilation", self.bbox_dilation, -512, 512)
        _range("detection.bbox_crop_factor", self.bbox_crop_factor, 1.0, 10.0)
        _int_range("detection.drop_size", self.drop_size, 1, 16384)
        _choice("detection.sam_detection_hint", self.sam_detection_hint, SAM_HINTS)
        _int_range("detection.sam_dilation", self.sam_dilation, -512, 512)
        _range("detection.sam_threshold", self.sam_threshold, 0.0, 1.0)
        _int_range("detection.sam_bbox_expansion", self.sam_bbox_expansion, 0, 1000)
        _range("detection.sam_mask_hint_threshold", self.sam_mask_hint_threshold, 0.0, 1.0)
        _choice(
            "detection.sam_mask_hint_use_negative",
            self.sam_mask_hint_use_negative,
            ("False", "Small", "Outter"),
        )


@dataclass(frozen=True)
class DetailerSpec:
    """One FaceDetailer pass. ``steps``/``cfg``/sampler None = same as the base sampler."""

    enabled: bool = True
    denoise: float = ranged(0.4, 0.01, 1.0)
    steps: int = ranged(20, 1, 200)
    cfg: float | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    guide_size: float = 1024.0
    guide_size_for_bbox: bool = True
    max_size: float = 1536.0
    feather: int = 5
    noise_mask: bool = True
    noise_mask_feather: int = 20
    force_inpaint: bool = True
    cycle: int = 1
    wildcard: str = ""
    inpaint_model: bool = False
    tiled_encode: bool = False
    tiled_decode: bool = False

    def __post_init__(self) -> None:
        self.check(C.STAGE_FACE_DETAILER)

    def check(self, prefix: str) -> None:
        check_range(f"{prefix}.denoise", self, "denoise")
        check_range(f"{prefix}.steps", self, "steps")
        if self.cfg is not None:
            _range(f"{prefix}.cfg", self.cfg, 1.0, 30.0)
        if self.sampler_name is not None:
            _choice(f"{prefix}.sampler", self.sampler_name, SAMPLER_NAMES)
        if self.scheduler is not None:
            _choice(f"{prefix}.scheduler", self.scheduler, SCHEDULERS)
        _range(f"{prefix}.guide_size", self.guide_size, 64, 4096)
        _range(f"{prefix}.max_size", self.max_size, 64, 4096)
        _int_range(f"{prefix}.feather", self.feather, 0, 100)
        _int_range(f"{prefix}.noise_mask_feather", self.noise_mask_feather, 0, 100)
        _int_range(f"{prefix}.cycle", self.cycle, 1, 10)
        _text(f"{prefix}.wildcard", self.wildcard)


@dataclass(frozen=True)
class InstantIDSpec:
    """InstantID as a post-fix at weight 0.85, keyed to the generated image's face.

    ``mode="detailer"`` (default) re-samples only the face crop with InstantID's identity
    attention (no ControlNet hint to misplace); ``"img2img"`` runs ApplyInstantID over the whole
    frame with keypoints from the generated image. ``denoise`` None = 0.5 (detailer) / 0.4
    (img2img). See docs/pipeline.md for the decision.
    """

    enabled: bool = True
    mode: str = "detailer"
    weight: float = ranged(0.85, 0.0, 3.0)
    instantid_file: str = "ip-adapter.bin"
    control_net_name: str = "instantid/diffusion_pytorch_model.safetensors"
    provider: str = "CPU"
    start_at: float = 0.0
    end_at: float = 1.0
    # 0.3, not cubiq's 0.35: the patch's widget steps by 0.1 without a round, so the editor
    # turns 0.35 into 0.3 (docs/pipeline.md, "The InstantID decision").
    noise: float = 0.3
    denoise: float | None = None
    steps: int = ranged(20, 1, 200)

    def __post_init__(self) -> None:
        _choice("instantid.mode", self.mode, INSTANTID_MODES)
        check_range("instantid.weight", self, "weight")
        _name("instantid.instantid_file", self.instantid_file)
        _name("instantid.control_net_name", self.control_net_name)
        _choice("instantid.provider", self.provider, PROVIDERS)
        _range("instantid.start_at", self.start_at, 0.0, 1.0)
        _range("instantid.end_at", self.end_at, 0.0, 1.0)
        if self.start_at >= self.end_at:
            raise ParameterError("instantid.end_at", "must be greater than start_at")
        _range("instantid.noise", self.noise, 0.0, 1.0)
        if self.denoise is not None:
            _range("instantid.denoise", self.denoise, 0.01, 1.0)
        check_range("instantid.steps", self, "steps")

    @property
    def effective_denoise(self) -> float:
        if self.denoise is not None:
            return self.denoise
        return 0.5 if self.mode == "detailer" else 0.4


@dataclass(frozen=True)
class UpscaleSpec:
    """4x-UltraSharp through core UpscaleModelLoader + ImageUpscaleWithModel (832×1216 → 4K).

    ``output_scale`` < 1 resizes after the 4× pass (0.5 gives 2× files, a quarter of the bytes).
    """

    enabled: bool = True
    model_name: str = "4x-UltraSharp.pth"
    output_scale: float = ranged(1.0, 0.25, 1.0)

    def __post_init__(self) -> None:
        _name("upscale.model", self.model_name)
        check_range("upscale.output_scale", self, "output_scale")


@dataclass(frozen=True)
class PAGSpec:
    """Perturbed-Attention Guidance on the base sampler (off by default: ~+50% sampling time)."""

    enabled: bool = False
    scale: float = ranged(3.0, 0.0, 10.0)

    def __post_init__(self) -> None:
        check_range("pag.scale", self, "scale")


@dataclass(frozen=True)
class EarlyGateSpec:
    """The early identity gate (``gate.py``): after the InstantID fix, at 832×1216, an attempt
    scoring below ``threshold`` stops before the detailer and upscale. Off here (a macro node
    or a workflow file runs every stage); the pack file turns it on at its identity threshold
    minus a margin (``identity.early_gate``, docs/pipeline.md says why 0.10)."""

    enabled: bool = False
    threshold: float = ranged(round(IDENTITY_THRESHOLD - EARLY_GATE_MARGIN, 4), -1.0, 1.0)

    def __post_init__(self) -> None:
        check_range("early_gate.threshold", self, "threshold")


@dataclass(frozen=True)
class PipelineSpec:
    """Everything one job needs: character, scene prompt, seed and every stage's settings."""

    character: CharacterSpec = field(default_factory=CharacterSpec)
    prompt: str = ""
    negative: str = ""
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    faceid: FaceIDSpec = field(default_factory=FaceIDSpec)
    instantid: InstantIDSpec = field(default_factory=InstantIDSpec)
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    face_detailer: DetailerSpec = field(default_factory=DetailerSpec)
    upscale: UpscaleSpec = field(default_factory=UpscaleSpec)
    pag: PAGSpec = field(default_factory=PAGSpec)
    img2img: Img2ImgSpec | None = None
    pose: PoseSpec | None = None
    identity: IdentitySpec = field(default_factory=IdentitySpec)
    early_gate: EarlyGateSpec = field(default_factory=EarlyGateSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    def __post_init__(self) -> None:
        _text("prompt", self.prompt)
        _text("negative", self.negative)


T = TypeVar("T")


def evolve(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that re-runs the range checks (it does: frozen + __post_init__)."""
    return replace(obj, **changes)  # type: ignore[type-var]


def field_names(cls: type) -> tuple[str, ...]:
    """Names of a parameter type's fields (for the pack file's unknown-key errors)."""
    return tuple(f.name for f in fields(cls))
