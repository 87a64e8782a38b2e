"""Faces in the stand-in world: InsightFace on the tiny models, pulling faces toward references.

Owns the face side of the stand-ins: loading ``insightface.app.FaceAnalysis`` from
``<models>/insightface`` exactly as the real IP-Adapter and InstantID packs do (the tiny models
make it cheap), turning a reference IMAGE into ``FaceRef`` s (raising the real packs' "no face"
errors), and ``pull_toward``: warping a reference face onto a face in a picture (similarity
transform from key points to key points) and blending it in with a feathered head mask. The
blend weight is how strongly FaceID / InstantID patches act, so identity scores rise with them.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

import cv2
import folder_paths
import numpy as np
import torch

from .objects import FaceRef

log = logging.getLogger(__name__)

DET_SIZE = (640, 640)


def insightface_dir() -> str:
    # Hard-coded by both cubiq packs, so the test world uses the same place.
    return os.path.join(folder_paths.models_dir, "insightface")


@lru_cache(maxsize=4)
def face_analysis(name: str, *, detection_only: bool = False) -> Any:
    """``FaceAnalysis`` for a model pack (``buffalo_l``, ``antelopev2``), prepared at 640x640.

    The provider is always CPU: the requested one is recorded by the caller (on a CPU-only
    onnxruntime a CUDA request would only warn and fall back).
    """
    from insightface.app import FaceAnalysis

    root = insightface_dir()
    if not os.path.isdir(os.path.join(root, "models", name)):
        raise RuntimeError(
            f"InsightFace model pack {name!r} not found in {root}/models; place it there "
            "(not nested), as the real node packs require"
        )
    modules = ["detection"] if detection_only else None
    analysis = FaceAnalysis(
        name=name, root=root, allowed_modules=modules, providers=["CPUExecutionProvider"]
    )
    analysis.prepare(ctx_id=0, det_size=DET_SIZE)
    return analysis


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE ([H, W, C] floats 0..1) as an RGB uint8 array."""
    array = image[..., :3].clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(array)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)


def find_faces(analysis: Any, rgb: np.ndarray) -> list[Any]:
    """InsightFace faces in an RGB picture, largest first."""
    found = analysis.get(np.ascontiguousarray(rgb[:, :, ::-1]))
    return sorted(found, key=lambda f: -(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))


def reference_faces(analysis: Any, images: torch.Tensor, *, missing: str) -> tuple[FaceRef, ...]:
    """The largest face of every reference picture; ``missing`` is the real pack's error."""
    refs = []
    for image in images:
        rgb = to_uint8(image)
        found = find_faces(analysis, rgb)
        if not found:
            raise Exception(missing)
        face = found[0]
        embedding = getattr(face, "normed_embedding", None)
        refs.append(FaceRef(image=rgb, kps=np.asarray(face.kps, np.float32), embedding=embedding))
    return tuple(refs)


def aligned_crop(ref: FaceRef, size: int) -> np.ndarray:
    """The reference face aligned like ArcFace's input, ``size`` pixels square (112 or 128 * k)."""
    from insightface.utils import face_align

    return face_align.norm_crop(ref.image, landmark=ref.kps, image_size=size)


def head_mask(shape: tuple[int, int], kps: np.ndarray, *, feather: float = 0.08) -> np.ndarray:
    """A soft ellipse over the head of a face with key points ``kps`` (values 0..1)."""
    height, width = shape
    eyes = kps[1] - kps[0]
    d = float(np.hypot(*eyes)) or 1.0
    mid = (kps[0] + kps[1]) / 2
    centre = (int(round(mid[0])), int(round(mid[1] + 0.3 * d)))
    axes = (int(round(1.25 * d)), int(round(1.75 * d)))
    angle = float(np.degrees(np.arctan2(eyes[1], eyes[0])))
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1.0, -1)
    blur = max(1, int(feather * d) * 2 + 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0)


def pull_toward(rgb: np.ndarray, kps: np.ndarray, ref: FaceRef, amount: float) -> np.ndarray:
    """``rgb`` with the face at ``kps`` blended ``amount`` of the way toward ``ref``'s face."""
    amount = float(np.clip(amount, 0.0, 1.0))
    if amount <= 0:
        return rgb
    height, width = rgb.shape[:2]
    matrix, _ = cv2.estimateAffinePartial2D(ref.kps, kps.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        return rgb
    warped = cv2.warpAffine(ref.image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    alpha = head_mask((height, width), kps)[..., None] * amount
    out = rgb.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def detector() -> Any | None:
    """A detection-only ``FaceAnalysis`` for finding faces in pictures, or None without models."""
    try:
        return face_analysis("buffalo_l", detection_only=True)
    except RuntimeError as error:
        log.warning("stand-ins cannot find faces: %s", error)
        return None
