"""Stand-ins for cubiq/ComfyUI_InstantID (commit 1ef34ef): the seven nodes of ``third_party.json``.

Behaviour a user can see is kept: InsightFace ``antelopev2`` is loaded for real from
``models/insightface`` (the tiny test models; a missing pack fails), a reference without a face
fails with "Reference Image: No face detected.", the keypoint hint comes from ``image_kps`` when
given (a face-less keypoint image gives a zero hint and a warning) and otherwise from the
reference, and the MODEL carries an InstantID patch whose strength follows ``weight`` (or
``ip_weight``) and the start/end window, while the CONDITIONING carries the InstantID ControlNet.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import cv2
import folder_paths
import numpy as np
import torch

from . import identity
from .objects import Patch, StandInControlNet, read_model_file

log = logging.getLogger(__name__)

NO_REFERENCE_FACE = "Reference Image: No face detected."
KPS_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


def register_folders() -> None:
    """``models/instantid``, as the pack registers it."""
    folder_paths.folder_names_and_paths["instantid"] = (
        [os.path.join(folder_paths.models_dir, "instantid")],
        folder_paths.supported_pt_extensions,
    )


def draw_kps(height: int, width: int, kps: np.ndarray | None) -> np.ndarray:
    """InstantID's keypoint picture: four limbs to the nose and five dots, on black."""
    canvas = np.zeros((height, width, 3), np.uint8)
    if kps is None:
        return canvas
    for start in (0, 1, 3, 4):
        a, b = kps[start], kps[2]
        length = float(np.hypot(*(a - b)))
        angle = math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))
        centre = (int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), 4), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, tuple(int(c * 0.6) for c in KPS_COLOURS[start]))
    for index, (x, y) in enumerate(kps):
        cv2.circle(canvas, (int(x), int(y)), 10, KPS_COLOURS[index], -1)
    return canvas


def keypoint_hint(analysis: Any, image: torch.Tensor) -> torch.Tensor:
    """[1, H, W, 3] keypoint picture of the first image's largest face (zeros when none)."""
    rgb = identity.to_uint8(image[0])
    found = identity.find_faces(analysis, rgb)
    if not found:
        log.warning("InstantID: no face detected in the keypoints image")
    kps = np.asarray(found[0].kps) if found else None
    return identity.to_tensor(draw_kps(rgb.shape[0], rgb.shape[1], kps))[None]


def identity_strength(weight: float, start_at: float, end_at: float) -> float:
    return float(np.clip(0.9 * weight, 0.0, 0.95) * np.clip(end_at - start_at, 0.0, 1.0))


def with_control(
    conditioning: list[list[Any]],
    control_net: StandInControlNet,
    hint: torch.Tensor,
    strength: float,
    window: tuple[float, float],
) -> list[list[Any]]:
    out = []
    for cond, extra in conditioning:
        extra = dict(extra)
        net = control_net.copy().set_cond_hint(hint.movedim(-1, 1), strength, window)
        net.set_previous_controlnet(extra.get("control"))
        extra.update(control=net, control_apply_to_uncond=False, charpack_instantid=True)
        out.append([cond, extra])
    return out


def _window() -> dict[str, Any]:
    return {
        "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
        "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}),
    }


class InstantIDModelLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"instantid_file": (folder_paths.get_filename_list("instantid"),)}}

    RETURN_TYPES = ("INSTANTID",)
    FUNCTION = "load_model"
    CATEGORY = "InstantID"

    def load_model(self, instantid_file: str) -> tuple[dict[str, Any]]:
        info = read_model_file(
            "instantid",
            instantid_file,
            role="instantid",
            invalid=f"invalid InstantID model {instantid_file}",
        )
        return ({"file": instantid_file, "path": info["path"]},)


class InstantIDFaceAnalysis:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"provider": (["CPU", "CUDA", "ROCM", "CoreML"],)}}

    RETURN_TYPES = ("FACEANALYSIS",)
    FUNCTION = "load_insight_face"
    CATEGORY = "InstantID"

    def load_insight_face(self, provider: str) -> tuple[Any]:
        return (identity.face_analysis("antelopev2"),)


class FaceKeypointsPreprocessor:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"faceanalysis": ("FACEANALYSIS",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "preprocess_image"
    CATEGORY = "InstantID"

    def preprocess_image(self, faceanalysis: Any, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (keypoint_hint(faceanalysis, image),)


class ApplyInstantID:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "instantid": ("INSTANTID",),
                "insightface": ("FACEANALYSIS",),
                "control_net": ("CONTROL_NET",),
                "image": ("IMAGE",),
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "weight": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 5.0, "step": 0.01}),
                **_window(),
            },
            "optional": {"image_kps": ("IMAGE",), "mask": ("MASK",)},
        }

    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("MODEL", "positive", "negative")
    FUNCTION = "apply_instantid"
    CATEGORY = "InstantID"

    def apply_instantid(
        self,
        instantid: Any,
        insightface: Any,
        control_net: Any,
        image: torch.Tensor,
        model: Any,
        positive: Any,
        negative: Any,
        start_at: float,
        end_at: float,
        weight: float = 0.8,
        ip_weight: Any = None,
        cn_strength: Any = None,
        noise: float = 0.35,
        image_kps: Any = None,
        mask: Any = None,
        combine_embeds: str = "average",
    ) -> tuple[Any, ...]:
        ip_weight = weight if ip_weight is None else ip_weight
        cn_strength = weight if cn_strength is None else cn_strength
        refs = identity.reference_faces(insightface, image, missing=NO_REFERENCE_FACE)
        hint = keypoint_hint(insightface, image_kps if image_kps is not None else image)
        patch = Patch(
            kind="InstantID",
            weight=float(ip_weight),
            faces=refs,
            identity=identity_strength(ip_weight, start_at, end_at),
            info=(("noise", float(noise)), ("combine_embeds", combine_embeds)),
        )
        window = (start_at, end_at)
        return (
            model.with_patch(patch),
            with_control(positive, control_net, hint, cn_strength, window),
            with_control(negative, control_net, hint, cn_strength, window),
        )


class ApplyInstantIDAdvanced(ApplyInstantID):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        types = super().INPUT_TYPES()
        required = {
            k: v for k, v in types["required"].items() if k not in ("weight", "start_at", "end_at")
        }
        required.update(
            ip_weight=("FLOAT", {"default": 0.8, "min": 0.0, "max": 3.0, "step": 0.01}),
            cn_strength=("FLOAT", {"default": 0.8, "min": 0.0, "max": 10.0, "step": 0.01}),
            **_window(),
            noise=("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.1}),
            combine_embeds=(["average", "norm average", "concat"], {"default": "average"}),
        )
        return {"required": required, "optional": types["optional"]}


class InstantIDAttentionPatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "instantid": ("INSTANTID",),
                "insightface": ("FACEANALYSIS",),
                "image": ("IMAGE",),
                "model": ("MODEL",),
                "weight": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.01}),
                **_window(),
                "noise": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.1}),
            },
            "optional": {"mask": ("MASK",)},
        }

    RETURN_TYPES = ("MODEL", "FACE_EMBEDS")
    FUNCTION = "patch_attention"
    CATEGORY = "InstantID"

    def patch_attention(
        self,
        instantid: Any,
        insightface: Any,
        image: torch.Tensor,
        model: Any,
        weight: float,
        start_at: float,
        end_at: float,
        noise: float,
        mask: Any = None,
    ) -> tuple[Any, dict[str, Any]]:
        refs = identity.reference_faces(insightface, image, missing=NO_REFERENCE_FACE)
        patch = Patch(
            kind="InstantIDAttentionPatch",
            weight=float(weight),
            faces=refs,
            identity=identity_strength(weight, start_at, end_at),
        )
        embeds = {"faces": refs, "cond": [r.embedding for r in refs], "noise": float(noise)}
        return (model.with_patch(patch), embeds)


class ApplyInstantIDControlNet:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "face_embeds": ("FACE_EMBEDS",),
                "control_net": ("CONTROL_NET",),
                "image_kps": ("IMAGE",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                **_window(),
            },
            "optional": {"mask": ("MASK",)},
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_controlnet"
    CATEGORY = "InstantID"

    def apply_controlnet(
        self,
        face_embeds: dict[str, Any],
        control_net: Any,
        image_kps: torch.Tensor,
        positive: Any,
        negative: Any,
        strength: float,
        start_at: float,
        end_at: float,
        mask: Any = None,
    ) -> tuple[Any, Any]:
        analysis = identity.face_analysis("antelopev2")
        hint = keypoint_hint(analysis, image_kps)
        window = (start_at, end_at)
        return (
            with_control(positive, control_net, hint, strength, window),
            with_control(negative, control_net, hint, strength, window),
        )


NODES: dict[str, type] = {
    "InstantIDModelLoader": InstantIDModelLoader,
    "InstantIDFaceAnalysis": InstantIDFaceAnalysis,
    "FaceKeypointsPreprocessor": FaceKeypointsPreprocessor,
    "ApplyInstantID": ApplyInstantID,
    "ApplyInstantIDAdvanced": ApplyInstantIDAdvanced,
    "InstantIDAttentionPatch": InstantIDAttentionPatch,
    "ApplyInstantIDControlNet": ApplyInstantIDControlNet,
}
DISPLAY_NAMES = {
    "InstantIDModelLoader": "Load InstantID Model",
    "InstantIDFaceAnalysis": "InstantID Face Analysis",
    "FaceKeypointsPreprocessor": "Face Keypoints Preprocessor",
    "ApplyInstantID": "Apply InstantID",
    "ApplyInstantIDAdvanced": "Apply InstantID Advanced",
    "InstantIDAttentionPatch": "InstantID Patch Attention",
    "ApplyInstantIDControlNet": "InstantID Apply ControlNet",
}
