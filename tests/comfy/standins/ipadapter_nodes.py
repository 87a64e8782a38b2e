"""Stand-ins for cubiq/ComfyUI_IPAdapter_plus (commit 9d076a3): the six nodes the pipeline may use.

Signatures are those of ``third_party.json``; behaviour follows the pack where a user can see it:
the unified loaders find the CLIP vision, IP-Adapter and LoRA files by the pack's own name
patterns ("ClipVision model not found.", "IPAdapter model not found.", "LoRA model not found."),
the FaceID v2 switch comes from ``plusv2`` in the file name, InsightFace ``buffalo_l`` is loaded for
real from ``models/insightface`` (the tiny test models), a reference without a face fails with
"InsightFace: No face detected.", and the returned MODEL carries a FaceID patch whose strength
follows ``weight``, ``weight_faceidv2`` and the start/end window.
"""

from __future__ import annotations

import os
import re
from typing import Any

import folder_paths
import numpy as np
import torch

from . import identity
from .objects import Patch, StandInClipVision, lora_face, read_model_file

WEIGHT_TYPES = [
    "linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input",
    "weak output", "weak middle", "strong middle", "style transfer", "composition",
    "strong style transfer", "style and composition", "style transfer precise",
    "composition precise",
]  # fmt: skip
COMBINE = ["concat", "add", "subtract", "average", "norm average"]
SCALING = ["V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty"]
PRESETS = [
    "LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
    "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)",
]  # fmt: skip
FACEID_PRESETS = [
    "FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
    "FACEID PORTRAIT UNNORM - SDXL only (strong)",
]  # fmt: skip
# preset prefix (lower case) -> (SDXL file pattern, SDXL LoRA pattern, needs InsightFace).
SDXL_FILES: dict[str, tuple[str | None, str | None, bool]] = {
    "light": (None, None, False),
    "standard": (r"ip.adapter.sdxl.vit.h\.(safetensors|bin)$", None, False),
    "vit-g": (r"ip.adapter.sdxl\.(safetensors|bin)$", None, False),
    "plus (": (r"plus.sdxl.vit.h\.(safetensors|bin)$", None, False),
    "plus face": (r"plus.face.sdxl.vit.h\.(safetensors|bin)$", None, False),
    "full": (None, None, False),
    "faceid portrait unnorm": (r"portrait.sdxl.unnorm\.(safetensors|bin)$", None, True),
    "faceid portrait (": (r"portrait.sdxl\.(safetensors|bin)$", None, True),
    "faceid plus v2": (
        r"faceid.plusv2.sdxl\.(safetensors|bin)$",
        r"faceid.plusv2.sdxl.lora\.safetensors$",
        True,
    ),
    "faceid plus -": (None, None, True),
    "faceid": (r"faceid.sdxl\.(safetensors|bin)$", r"faceid.sdxl.lora\.safetensors$", True),
}


def register_folders() -> None:
    """``models/ipadapter``, as the pack registers it."""
    paths = [os.path.join(folder_paths.models_dir, "ipadapter")]
    if "ipadapter" in folder_paths.folder_names_and_paths:
        paths = folder_paths.folder_names_and_paths["ipadapter"][0]
    folder_paths.folder_names_and_paths["ipadapter"] = (paths, folder_paths.supported_pt_extensions)


def _find(folder: str, pattern: str) -> str | None:
    hits = [n for n in folder_paths.get_filename_list(folder) if re.search(pattern, n, re.I)]
    return hits[0] if hits else None


def load_ipadapter_file(name: str) -> dict[str, Any]:
    info = read_model_file(
        "ipadapter", name, role="ipadapter", invalid=f"invalid IPAdapter model {name}"
    )
    lower = name.lower()
    return {
        "file": name,
        "ip_adapter": {"standin": True},
        "faceidplusv2": "plusv2" in lower,
        "portraitunnorm": "unnorm" in lower,
        "is_faceid": "faceid" in lower or "portrait" in lower,
        "path": info["path"],
    }


def load_insightface(provider: str, model_name: str = "buffalo_l") -> Any:
    """The pack's ``insightface_loader``: a prepared ``FaceAnalysis`` (on CPU in the test world)."""
    return identity.face_analysis(model_name)


class IPAdapterUnifiedLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"model": ("MODEL",), "preset": (PRESETS,)},
            "optional": {"ipadapter": ("IPADAPTER",)},
        }

    RETURN_TYPES = ("MODEL", "IPADAPTER")
    RETURN_NAMES = ("model", "ipadapter")
    FUNCTION = "load_models"
    CATEGORY = "ipadapter"

    def load_models(
        self,
        model: Any,
        preset: str,
        lora_strength: float = 0.0,
        provider: str = "CPU",
        ipadapter: Any = None,
    ) -> tuple[Any, dict[str, Any]]:
        pipeline = dict(ipadapter or {})
        lower = preset.lower()
        vision_pattern = (
            r"(ViT.bigG.14.*39B.b160k|ipadapter.*sdxl|sdxl.*model\.(bin|safetensors))"
            if lower.startswith("vit-g")
            else r"(ViT.H.14.*s32B.b79K|ipadapter.*sd15|sd1.?5.*model\.(bin|safetensors))"
        )
        vision = _find("clip_vision", vision_pattern)
        if vision is None:
            raise Exception("ClipVision model not found.")
        read_model_file("clip_vision", vision, role="clip_vision", invalid="invalid CLIP vision")
        pipeline["clipvision"] = {"file": vision, "model": StandInClipVision(vision)}
        key = next(k for k in SDXL_FILES if lower.startswith(k))
        pattern, lora_pattern, needs_insightface = SDXL_FILES[key]
        if model.arch != "sdxl":
            raise Exception("the test world only has SDXL checkpoints")
        found = _find("ipadapter", pattern) if pattern else None
        if found is None:
            raise Exception("IPAdapter model not found.")
        pipeline["ipadapter"] = {"file": found, "model": load_ipadapter_file(found)}
        if lora_pattern is not None:
            lora = _find("loras", lora_pattern)
            if lora is None:
                raise Exception("LoRA model not found.")
            info = read_model_file("loras", lora, role="lora", invalid="invalid LoRA")
            if lora_strength > 0:
                model = model.clone()
                model.loras.append((lora, float(lora_strength), lora_face(info)))
        if needs_insightface:
            pipeline["insightface"] = {"provider": provider, "model": load_insightface(provider)}
        return (model, pipeline)


class IPAdapterUnifiedLoaderFaceID(IPAdapterUnifiedLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "preset": (FACEID_PRESETS,),
                "lora_strength": ("FLOAT", {"default": 0.6, "min": 0, "max": 1, "step": 0.01}),
                "provider": (["CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML"],),
            },
            "optional": {"ipadapter": ("IPADAPTER",)},
        }

    RETURN_NAMES = ("MODEL", "ipadapter")
    CATEGORY = "ipadapter/faceid"


class IPAdapterModelLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ipadapter_file": (folder_paths.get_filename_list("ipadapter"),)}}

    RETURN_TYPES = ("IPADAPTER",)
    FUNCTION = "load_ipadapter_model"
    CATEGORY = "ipadapter/loaders"

    def load_ipadapter_model(self, ipadapter_file: str) -> tuple[dict[str, Any]]:
        return (load_ipadapter_file(ipadapter_file),)


class IPAdapterInsightFaceLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "provider": (["CPU", "CUDA", "ROCM"],),
                "model_name": (["buffalo_l", "antelopev2"],),
            }
        }

    RETURN_TYPES = ("INSIGHTFACE",)
    FUNCTION = "load_insightface"
    CATEGORY = "ipadapter/loaders"

    def load_insightface(self, provider: str, model_name: str) -> tuple[Any]:
        return (load_insightface(provider, model_name),)


def _ipadapter_inputs(weight_max: float) -> dict[str, Any]:
    return {
        "model": ("MODEL",),
        "ipadapter": ("IPADAPTER",),
        "image": ("IMAGE",),
        "weight": ("FLOAT", {"default": 1.0, "min": -1, "max": weight_max, "step": 0.05}),
    }


def _window() -> dict[str, Any]:
    return {
        "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
        "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}),
        "embeds_scaling": (SCALING,),
    }


class IPAdapterAdvanced:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        required = _ipadapter_inputs(5)
        required.update(weight_type=(WEIGHT_TYPES,), combine_embeds=(COMBINE,), **_window())
        return {
            "required": required,
            "optional": {
                "image_negative": ("IMAGE",),
                "attn_mask": ("MASK",),
                "clip_vision": ("CLIP_VISION",),
            },
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply_ipadapter"
    CATEGORY = "ipadapter"

    def apply_ipadapter(
        self,
        model: Any,
        ipadapter: dict[str, Any],
        image: torch.Tensor,
        weight: float = 1.0,
        start_at: float = 0.0,
        end_at: float = 1.0,
        clip_vision: Any = None,
        **options: Any,
    ) -> tuple[Any]:
        if clip_vision is None and "clipvision" not in ipadapter:
            raise Exception("Missing CLIPVision model.")
        colour = image[..., :3].mean(dim=(0, 1, 2)).tolist()
        patch = Patch(
            kind="IPAdapterAdvanced",
            weight=float(weight) * (end_at - start_at),
            info=(("colour", tuple(colour)),),
        )
        return (model.with_patch(patch),)


class IPAdapterFaceID:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        required = _ipadapter_inputs(3)
        required["weight_faceidv2"] = (
            "FLOAT",
            {"default": 1.0, "min": -1, "max": 5.0, "step": 0.05},
        )
        required.update(weight_type=(WEIGHT_TYPES,), combine_embeds=(COMBINE,), **_window())
        return {
            "required": required,
            "optional": {
                "image_negative": ("IMAGE",),
                "attn_mask": ("MASK",),
                "clip_vision": ("CLIP_VISION",),
                "insightface": ("INSIGHTFACE",),
            },
        }

    RETURN_TYPES = ("MODEL", "IMAGE")
    RETURN_NAMES = ("MODEL", "face_image")
    FUNCTION = "apply_ipadapter"
    CATEGORY = "ipadapter/faceid"

    def apply_ipadapter(
        self,
        model: Any,
        ipadapter: dict[str, Any],
        image: torch.Tensor,
        weight: float = 1.0,
        weight_faceidv2: float = 1.0,
        start_at: float = 0.0,
        end_at: float = 1.0,
        clip_vision: Any = None,
        insightface: Any = None,
        **options: Any,
    ) -> tuple[Any, torch.Tensor]:
        adapter = ipadapter["ipadapter"]["model"] if "ipadapter" in ipadapter else ipadapter
        if clip_vision is None:
            clip_vision = ipadapter.get("clipvision", {}).get("model")
        if clip_vision is None:
            raise Exception("Missing CLIPVision model.")
        if insightface is None:
            insightface = ipadapter.get("insightface", {}).get("model")
        if adapter.get("is_faceid") and insightface is None:
            raise Exception("insightface model is required for FaceID models")
        refs = identity.reference_faces(
            insightface, image, missing="InsightFace: No face detected."
        )
        v2 = bool(adapter.get("faceidplusv2"))
        strength = 0.55 * weight + (0.12 * weight_faceidv2 if v2 else 0.0)
        strength = float(np.clip(strength, 0.0, 0.9) * np.clip(end_at - start_at, 0.0, 1.0))
        patch = Patch(
            kind="IPAdapterFaceID",
            weight=float(weight),
            identity=strength,
            faces=refs,
            info=(("faceidv2", v2), ("weight_faceidv2", float(weight_faceidv2))),
        )
        crops = [identity.aligned_crop(ref, 256) for ref in refs]
        return (model.with_patch(patch), torch.stack([identity.to_tensor(c) for c in crops]))


NODES: dict[str, type] = {
    "IPAdapterUnifiedLoader": IPAdapterUnifiedLoader,
    "IPAdapterUnifiedLoaderFaceID": IPAdapterUnifiedLoaderFaceID,
    "IPAdapterModelLoader": IPAdapterModelLoader,
    "IPAdapterInsightFaceLoader": IPAdapterInsightFaceLoader,
    "IPAdapterAdvanced": IPAdapterAdvanced,
    "IPAdapterFaceID": IPAdapterFaceID,
}
DISPLAY_NAMES = {
    "IPAdapterUnifiedLoader": "IPAdapter Unified Loader",
    "IPAdapterUnifiedLoaderFaceID": "IPAdapter Unified Loader FaceID",
    "IPAdapterModelLoader": "IPAdapter Model Loader",
    "IPAdapterInsightFaceLoader": "IPAdapter InsightFace Loader",
    "IPAdapterAdvanced": "IPAdapter Advanced",
    "IPAdapterFaceID": "IPAdapter FaceID",
}
