"""What the stand-in sampler "generates": deterministic pictures from a recorded recipe.

Owns the stand-in world's image model. The stand-in KSampler records a ``Recipe`` (seed, prompt,
CFG, denoise, the MODEL's LoRAs and patches, the source picture for img2img) against the latent
tensor it returns; the VAE's ``decode`` renders it:

* text-to-image: a backdrop whose colours follow the prompt and seed, and one drawn face whose look
  is the seed's random face moved toward the faces the LoRAs carry (by their strength), placed and
  turned by seed and prompt ("profile", "three-quarter", "full body", "close-up"); then every
  identity patch (FaceID, InstantID) pulls it toward its reference face. CFG above 5 adds grain.
* image-to-image (a latent from VAEEncode, or one sampler fed into another): the source picture,
  with each detected face redrawn toward the seed's face by ``denoise`` and pulled toward the
  identity references.

Everything is seeded and cheap (Pillow drawing, a few OpenCV warps), so the same prompt gives the
same bytes and identity scores against a reference rise with FaceID / InstantID and vary by seed.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import faces, identity
from .objects import LATENT_TAGS, StandInModel


@dataclass(frozen=True)
class Source:
    """A latent made by VAEEncode: the pixels it came from."""

    pixels: torch.Tensor  # [B, H, W, 3]


@dataclass(frozen=True)
class Recipe:
    """What one stand-in sampler call was asked to make."""

    seed: int
    steps: int
    cfg: float
    denoise: float
    model: StandInModel
    positive: str
    negative: str
    width: int
    height: int
    batch: int
    source: Any = None  # Source, Recipe (a sampler fed by a sampler) or None


def encode(pixels: torch.Tensor) -> torch.Tensor:
    """VAE-encode: 4 x H/8 x W/8 (mean colour and brightness per 8x8 cell), remembering pixels."""
    height, width = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    pixels = pixels[:, :height, :width, :3].float()
    rgb = pixels.movedim(-1, 1)
    cells = F.avg_pool2d(rgb, 8)
    latent = torch.cat([cells, cells.mean(dim=1, keepdim=True)], dim=1) * 2 - 1
    LATENT_TAGS.put(latent, Source(pixels.clone()))
    return latent


def decode(samples: torch.Tensor, tag: Any) -> torch.Tensor:
    """VAE-decode: render the recorded recipe, or a plain picture of an unknown latent."""
    if isinstance(tag, Recipe):
        return torch.stack([identity.to_tensor(render(tag, index)) for index in range(tag.batch)])
    if isinstance(tag, Source):
        return tag.pixels.clone()
    # A latent no stand-in made (e.g. straight from EmptyLatentImage): its first three channels.
    rgb = torch.sigmoid(samples[:, :3].float()).repeat_interleave(8, 2).repeat_interleave(8, 3)
    return rgb.movedim(1, -1).contiguous()


def render(recipe: Recipe, index: int) -> np.ndarray:
    """One picture of the batch, RGB uint8 [height, width, 3]."""
    seed = recipe.seed + index
    rng = random.Random(f"{seed}|{recipe.positive}|{recipe.model.checkpoint}")
    if recipe.source is not None:
        base = source_pixels(recipe.source, index, recipe.width, recipe.height)
        out = refine_faces(base, recipe.model, rng, amount=recipe.denoise)
    else:
        out = _text_to_image(recipe, rng)
    return _finish(out, recipe, rng)


def source_pixels(source: Any, index: int, width: int, height: int) -> np.ndarray:
    if isinstance(source, Recipe):
        rgb = render(source, min(index, source.batch - 1))
    else:
        rgb = identity.to_uint8(source.pixels[min(index, source.pixels.shape[0] - 1)])
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC))
    return rgb


def _palette(text: str, rng: random.Random) -> tuple[faces.RGB, faces.RGB]:
    hue = zlib.crc32(text.encode()) % 360
    top = _hsv(hue + rng.uniform(-20, 20), 0.35, 0.75)
    bottom = _hsv(hue + 40 + rng.uniform(-20, 20), 0.45, 0.45)
    return top, bottom


def _hsv(hue: float, saturation: float, value: float) -> faces.RGB:
    image = Image.new(
        "HSV", (1, 1), (int(hue % 360 * 255 / 360), int(saturation * 255), int(value * 255))
    )
    return image.convert("RGB").getpixel((0, 0))  # type: ignore[return-value]


def face_for(model: StandInModel, rng: random.Random, prompt: str) -> faces.FaceParams:
    """The seed's random face, moved toward every face a LoRA carries."""
    params = faces.random_params(rng)
    for face, strength in model.face_params():
        params = faces.blend_params(params, face, max(0.0, min(1.0, strength)))
    text = prompt.lower()
    side = rng.choice((-1, 1))
    if "profile" in text:
        return params.turned(side * 0.85)
    if "three-quarter" in text or "three quarter" in text:
        return params.turned(side * 0.45)
    return params.turned(rng.uniform(-0.25, 0.25))


def _text_to_image(recipe: Recipe, rng: random.Random) -> np.ndarray:
    width, height = recipe.width, recipe.height
    text = recipe.positive.lower()
    image = faces.backdrop((width, height), *_palette(recipe.positive, rng))
    scale = 0.22 if ("close-up" in text or "closeup" in text) else 0.15
    if "full body" in text or "full-body" in text:
        scale = 0.09
    d = scale * min(width, height * 0.75) * rng.uniform(0.9, 1.1)
    centre = (width * rng.uniform(0.42, 0.58), height * rng.uniform(0.3, 0.4))
    params = face_for(recipe.model, rng, recipe.positive)
    marks = faces.draw_face(image, params, centre=centre, eye_distance=d)
    rgb = np.asarray(image.convert("RGB")).copy()
    kps = np.asarray(marks.kps, np.float32)
    for ref, strength in recipe.model.identity_refs():
        rgb = identity.pull_toward(rgb, kps, ref, strength * rng.uniform(0.9, 1.0))
    return rgb


def refine_faces(
    rgb: np.ndarray,
    model: StandInModel,
    rng: random.Random,
    *,
    amount: float,
    boxes: list[Any] | None = None,
) -> np.ndarray:
    """Redraw each face toward the seed's face by ``amount`` and pull it toward the references.

    ``boxes`` are detections to use (FaceDetailer's); by default faces are detected here.
    """
    if amount <= 0.02:
        return rgb
    if boxes is None:
        detector = identity.detector()
        boxes = identity.find_faces(detector, rgb) if detector is not None else []
    refs = model.identity_refs()
    pinned = 1.0 - np.prod([1.0 - s for _ref, s in refs]) if refs else 0.0
    out = rgb
    for face in boxes:
        kps = np.asarray(face.kps, np.float32)
        d = float(np.hypot(*(kps[1] - kps[0])))
        redraw = Image.new("RGBA", (out.shape[1], out.shape[0]), (0, 0, 0, 0))
        params = face_for(model, rng, "")
        mid = (kps[0] + kps[1]) / 2
        faces.draw_face(redraw, params, centre=(float(mid[0]), float(mid[1])), eye_distance=d)
        layer = np.asarray(redraw).astype(np.float32)
        alpha = (layer[..., 3:] / 255.0) * identity.head_mask(out.shape[:2], kps)[..., None]
        alpha *= amount * (1.0 - pinned)
        out = (out * (1 - alpha) + layer[..., :3] * alpha).round().clip(0, 255).astype(np.uint8)
        for ref, strength in refs:
            out = identity.pull_toward(out, kps, ref, strength * min(1.0, 2 * amount))
    return out


def _finish(rgb: np.ndarray, recipe: Recipe, rng: random.Random) -> np.ndarray:
    """Sampler side effects that show: grain above CFG 5, a little contrast from PAG."""
    out = rgb.astype(np.float32)
    pag = sum(p.weight for p in recipe.model.patches if p.kind == "PerturbedAttentionGuidance")
    if pag:
        out = (out - 128) * (1 + 0.02 * min(pag, 5)) + 128
    grain = max(0.0, recipe.cfg - 5.0) * 3.0
    if grain:
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, grain, out.shape)
        out = out + noise
    return out.round().clip(0, 255).astype(np.uint8)
