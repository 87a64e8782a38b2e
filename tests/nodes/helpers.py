"""Helpers for the node pack's nodes-tier tests: ComfyUI folders, calling V3 nodes, faces.

``call_node`` runs a V3 node the way ComfyUI's executor does (a class clone carrying the hidden
inputs); ``to_tensor`` and ``face_picture`` turn the test world's drawn faces into IMAGE tensors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tests.comfy.standins import faces

MODEL_FILES = {
    "checkpoints": ["bigLoveXL.safetensors"],
    "loras": ["character_lora.safetensors"],
    "upscale_models": ["4x-UltraSharp.pth"],
}


@dataclass(frozen=True)
class ComfyDirs:
    input: Path
    output: Path
    models: Path

    @property
    def insightface(self) -> Path:
        return self.models / "insightface"


def call_node(
    node: Any,
    *,
    unique_id: str | None = None,
    hidden_prompt: Any = None,
    extra_pnginfo: Any = None,
    **inputs: Any,
) -> Any:
    """Run a V3 node's ``execute`` with hidden inputs, as ComfyUI's executor does
    (``hidden_prompt`` is the hidden PROMPT; ``prompt`` would be a macro's own input)."""
    from comfy_api.latest import io

    hidden = {
        io.Hidden.unique_id: unique_id,
        io.Hidden.prompt: hidden_prompt,
        io.Hidden.extra_pnginfo: extra_pnginfo,
    }
    return node.PREPARE_CLASS_CLONE(hidden).execute(**inputs)


def to_tensor(*pictures: Image.Image) -> torch.Tensor:
    """PIL pictures of one size as a ComfyUI IMAGE batch ``[B, H, W, 3]``."""
    arrays = [np.asarray(p.convert("RGB"), dtype=np.float32) / 255.0 for p in pictures]
    return torch.from_numpy(np.stack(arrays))


def face_picture(params: faces.FaceParams = faces.AVA, *, size: int = 256) -> Image.Image:
    """A head-and-shoulders picture of one drawn face (the example character by default)."""
    picture, _marks = faces.portrait(params, size=(size, size))
    return picture


def stranger(seed: int) -> faces.FaceParams:
    """Someone who is not the example character (deterministic per seed)."""
    return faces.random_params(random.Random(seed), turn=0.0)
