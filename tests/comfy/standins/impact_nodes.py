"""Stand-ins for ltdrdata's Impact Pack (FaceDetailer, SAMLoader) and Subpack (Ultralytics).

Signatures are those of ``third_party.json`` except that FaceDetailer's sampler list is the
running ComfyUI's (the pack reads it from ``comfy.samplers``: 42 names on 0.3.75, 44 on 0.8.0).
The YOLO and SAM files are read and checked, then faces are found with the test world's tiny face
detector. FaceDetailer refines each face it keeps (``bbox_threshold``, ``drop_size``) the way the
stand-in img2img does: redrawn toward the seed's face by ``denoise`` and pulled toward the
identity references the MODEL's patches carry (an InstantID attention patch, FaceID), once per
``cycle``; a ``noise_mask_feather`` above 0 applies the real DifferentialDiffusion node to the
model, as the pack does. Outputs have the real shapes, including the list outputs.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import cv2
import folder_paths
import numpy as np
import torch

from . import identity, render
from .core_nodes import require_model, step_seconds
from .objects import read_model_file

IMPACT_SCHEDULERS = [
    "AYS SDXL", "AYS SD1", "AYS SVD", "GITS[coeff=1.2]", "LTXV[default]", "OSS FLUX", "OSS Wan",
    "OSS Chroma",
]  # fmt: skip
SAM_HINTS = [
    "center-1", "horizontal-2", "vertical-2", "rect-4", "diamond-4", "mask-area", "mask-points",
    "mask-point-bbox", "none",
]  # fmt: skip
ON_OFF = {"label_on": "enabled", "label_off": "disabled"}
SAM_MODEL_TIP = (
    "SAM checkpoint from models/sams (names containing 'hq' are filtered out; 'ESAM' appears only "
    "when ComfyUI-YoloWorld-EfficientSAM is installed; SAM2 files supported since V8.18)."
)
SAM_DEVICE_TIP = "AUTO: move to GPU only while detecting; Prefer GPU: keep on GPU; CPU: always CPU."


def register_folders() -> None:
    """``models/sams`` (Impact Pack) and ``models/ultralytics/{bbox,segm}`` (Subpack)."""
    models = folder_paths.models_dir
    exts = folder_paths.supported_pt_extensions
    folder_paths.folder_names_and_paths["sams"] = ([os.path.join(models, "sams")], exts)
    for key, sub in (("ultralytics_bbox", "bbox"), ("ultralytics_segm", "segm")):
        folder_paths.folder_names_and_paths[key] = (
            [os.path.join(models, "ultralytics", sub)],
            exts,
        )
    folder_paths.folder_names_and_paths["ultralytics"] = (
        [os.path.join(models, "ultralytics")],
        exts,
    )


def empty_image() -> torch.Tensor:
    return torch.zeros((1, 64, 64, 3))


@dataclass(frozen=True)
class FaceBoxDetector:
    """A BBOX_DETECTOR / SEGM_DETECTOR: the YOLO file it came from, faces via the tiny detector."""

    model_name: str
    kind: str  # "bbox" or "segm"; a bbox model's SEGM output is an unusable dummy
    dummy: bool = False

    def detect(self, rgb: np.ndarray, threshold: float, drop_size: int) -> list[Any]:
        detector = identity.detector()
        if detector is None:
            return []
        kept = []
        for face in identity.find_faces(detector, rgb):
            x1, y1, x2, y2 = face.bbox
            if face.det_score >= threshold and min(x2 - x1, y2 - y1) > drop_size:
                kept.append(face)
        return kept


class SAMLoader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        models = [x for x in folder_paths.get_filename_list("sams") if "hq" not in x]
        return {
            "required": {
                "model_name": (models, {"tooltip": SAM_MODEL_TIP}),
                "device_mode": (["AUTO", "Prefer GPU", "CPU"], {"tooltip": SAM_DEVICE_TIP}),
            }
        }

    RETURN_TYPES = ("SAM_MODEL",)
    FUNCTION = "load_model"
    CATEGORY = "ImpactPack"
    DESCRIPTION = "Loads a Segment-Anything model for Impact Pack SAM-based detection."

    def load_model(self, model_name: str, device_mode: str = "AUTO") -> tuple[dict[str, Any]]:
        read_model_file("sams", model_name, role="sam", invalid=f"invalid SAM model {model_name}")
        return ({"file": model_name, "device_mode": device_mode},)


class UltralyticsDetectorProvider:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        bboxes = ["bbox/" + x for x in folder_paths.get_filename_list("ultralytics_bbox")]
        segms = ["segm/" + x for x in folder_paths.get_filename_list("ultralytics_segm")]
        return {"required": {"model_name": (bboxes + segms,)}}

    RETURN_TYPES = ("BBOX_DETECTOR", "SEGM_DETECTOR")
    FUNCTION = "doit"
    CATEGORY = "ImpactPack"

    def doit(self, model_name: str) -> tuple[FaceBoxDetector, FaceBoxDetector]:
        kind, _, name = model_name.partition("/")
        read_model_file(
            f"ultralytics_{kind}",
            name,
            role=f"ultralytics_{kind}",
            invalid=f"invalid Ultralytics model {model_name}",
        )
        if kind == "bbox":
            return (
                FaceBoxDetector(model_name, "bbox"),
                FaceBoxDetector(model_name, "segm", dummy=True),
            )
        return (FaceBoxDetector(model_name, "bbox"), FaceBoxDetector(model_name, "segm"))


class FaceDetailer:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def f(default: float, lo: float, hi: float, step: float | None = None) -> tuple[Any, ...]:
            spec: dict[str, Any] = {"default": default, "min": lo, "max": hi}
            return ("FLOAT", spec | ({"step": step} if step is not None else {}))

        def i(default: int, lo: int, hi: int, step: int | None = 1) -> tuple[Any, ...]:
            spec: dict[str, Any] = {"default": default, "min": lo, "max": hi}
            return ("INT", spec | ({"step": step} if step is not None else {}))

        return {
            "required": {
                "image": ("IMAGE",),
                "model": (
                    "MODEL",
                    {"tooltip": "Connecting ImpactDummyInput here skips the sampling stage."},
                ),
                "clip": ("CLIP",),
                "vae": ("VAE",),
                "guide_size": f(512, 64, 16384, 8),
                "guide_size_for": (
                    "BOOLEAN",
                    {"default": True, "label_on": "bbox", "label_off": "crop_region"},
                ),
                "max_size": f(1024, 64, 16384, 8),
                "seed": i(0, 0, 0xFFFFFFFFFFFFFFFF, None),
                "steps": i(20, 1, 10000, None),
                "cfg": f(8.0, 0.0, 100.0),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS + IMPACT_SCHEDULERS,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "denoise": f(0.5, 0.0001, 1.0, 0.01),
                "feather": i(5, 0, 100),
                "noise_mask": ("BOOLEAN", {"default": True, **ON_OFF}),
                "force_inpaint": ("BOOLEAN", {"default": True, **ON_OFF}),
                "bbox_threshold": f(0.5, 0.0, 1.0, 0.01),
                "bbox_dilation": i(10, -512, 512),
                "bbox_crop_factor": f(3.0, 1.0, 10, 0.1),
                "sam_detection_hint": (SAM_HINTS,),
                "sam_dilation": i(0, -512, 512),
                "sam_threshold": f(0.93, 0.0, 1.0, 0.01),
                "sam_bbox_expansion": i(0, 0, 1000),
                "sam_mask_hint_threshold": f(0.7, 0.0, 1.0, 0.01),
                "sam_mask_hint_use_negative": (["False", "Small", "Outter"],),
                "drop_size": ("INT", {"min": 1, "max": 16384, "step": 1, "default": 10}),
                "bbox_detector": ("BBOX_DETECTOR",),
                "wildcard": ("STRING", {"multiline": True, "dynamicPrompts": False}),
                "cycle": i(1, 1, 10),
            },
            "optional": {
                "sam_model_opt": ("SAM_MODEL",),
                "segm_detector_opt": ("SEGM_DETECTOR",),
                "detailer_hook": ("DETAILER_HOOK",),
                "inpaint_model": ("BOOLEAN", {"default": False, **ON_OFF}),
                "noise_mask_feather": i(20, 0, 100),
                "scheduler_func_opt": ("SCHEDULER_FUNC",),
                "tiled_encode": ("BOOLEAN", {"default": False, **ON_OFF}),
                "tiled_decode": ("BOOLEAN", {"default": False, **ON_OFF}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "MASK", "DETAILER_PIPE", "IMAGE")
    RETURN_NAMES = (
        "image",
        "cropped_refined",
        "cropped_enhanced_alpha",
        "mask",
        "detailer_pipe",
        "cnet_images",
    )
    OUTPUT_IS_LIST = (False, True, True, False, False, True)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Simple"
    DESCRIPTION = (
        "Detects objects (faces by default) with bbox/segm/SAM models, upscales each "
        "detected crop toward guide_size, re-samples it and pastes it back."
    )

    def doit(
        self,
        image: torch.Tensor,
        model: Any,
        clip: Any,
        vae: Any,
        seed: int,
        steps: int,
        denoise: float,
        bbox_threshold: float,
        bbox_dilation: int,
        bbox_crop_factor: float,
        drop_size: int,
        bbox_detector: FaceBoxDetector,
        positive: Any,
        negative: Any,
        cycle: int = 1,
        sam_model_opt: Any = None,
        segm_detector_opt: Any = None,
        noise_mask_feather: int = 0,
        **options: Any,
    ) -> tuple[Any, ...]:
        model = require_model(model, "FaceDetailer")
        if noise_mask_feather > 0:
            # As the pack does when the noise mask is feathered: the real core node.
            from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion

            model = DifferentialDiffusion.execute(model).result[0]
        images, masks, crops, alphas = [], [], [], []
        for index, picture in enumerate(image):
            rgb = identity.to_uint8(picture)
            found = bbox_detector.detect(rgb, bbox_threshold, drop_size)
            mask = np.zeros(rgb.shape[:2], np.float32)
            for number, face in enumerate(found):
                self._work(steps * cycle)
                rng = random.Random(f"{seed + index + number}|detailer")
                for _ in range(cycle):
                    rgb = render.refine_faces(rgb, model, rng, amount=denoise, boxes=[face])
                face_mask = identity.head_mask(rgb.shape[:2], np.asarray(face.kps, np.float32))
                if bbox_dilation > 0:
                    kernel = np.ones((bbox_dilation, bbox_dilation), np.uint8)
                    face_mask = cv2.dilate(face_mask, kernel)
                mask = np.maximum(mask, face_mask)
                crop, alpha = self._crop(rgb, face_mask, face.bbox, bbox_crop_factor)
                crops.append(crop)
                alphas.append(alpha)
            images.append(identity.to_tensor(rgb))
            masks.append(torch.from_numpy(mask))
        pipe = (
            model,
            clip,
            vae,
            positive,
            negative,
            options.get("wildcard", ""),
            bbox_detector,
            segm_detector_opt,
            sam_model_opt,
            options.get("detailer_hook"),
            None,
            None,
            None,
            None,
        )
        return (
            torch.stack(images),
            crops or [empty_image()],
            alphas or [empty_image()],
            torch.stack(masks),
            pipe,
            [empty_image()],
        )

    @staticmethod
    def _work(total: int) -> None:
        progress = comfy.utils.ProgressBar(total)
        delay = step_seconds()
        for _ in range(total):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if delay:
                time.sleep(delay)  # simulated GPU work, so tests can catch a job while it runs
            progress.update(1)

    @staticmethod
    def _crop(
        rgb: np.ndarray, mask: np.ndarray, bbox: Any, factor: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x1, y1, x2, y2 = (float(v) for v in bbox)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor, (y2 - y1) * factor
        height, width = rgb.shape[:2]
        left, top = max(0, int(cx - w / 2)), max(0, int(cy - h / 2))
        right, bottom = min(width, int(cx + w / 2)), min(height, int(cy + h / 2))
        crop = identity.to_tensor(rgb[top:bottom, left:right])
        alpha = torch.from_numpy(mask[top:bottom, left:right])[..., None]
        return crop[None], torch.cat([crop, alpha], dim=-1)[None]


NODES: dict[str, type] = {
    "SAMLoader": SAMLoader,
    "FaceDetailer": FaceDetailer,
    "UltralyticsDetectorProvider": UltralyticsDetectorProvider,
}
DISPLAY_NAMES = {
    "SAMLoader": "SAMLoader (Impact)",
    "FaceDetailer": "FaceDetailer",
    "UltralyticsDetectorProvider": "UltralyticsDetectorProvider",
}
