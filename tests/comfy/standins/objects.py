"""The weightless objects that flow between stand-in nodes (MODEL, CLIP, VAE, CONTROL_NET ...).

Each object carries a record instead of weights: a MODEL knows its checkpoint, the LoRAs applied
(a LoRA file may carry a face, like the test world's character LoRA) and every patch (FaceID,
InstantID, IP-Adapter style, PAG ...). Where a *real* ComfyUI node only calls methods on the
object it receives (CLIPTextEncode, VAEDecode/VAEEncode, ControlNetApplyAdvanced, PAG,
DifferentialDiffusion), the object implements exactly those methods, so those nodes stay real.

Model files are read with ComfyUI's own ``comfy.utils.load_torch_file``; a file whose
``charpack_standin`` role is not the expected one fails like a wrong real file would.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import comfy.utils
import folder_paths
import torch

from . import faces

log = logging.getLogger(__name__)

ROLE_KEY = "charpack_standin"


def read_model_file(folder: str, name: str, *, role: str, invalid: str) -> dict[str, Any]:
    """Load ``models/<folder>/<name>`` and check its role; ``invalid`` is the real node's error."""
    path = folder_paths.get_full_path_or_raise(folder, name)
    if path.lower().endswith(".safetensors"):
        _, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
        info = dict(metadata or {})
    else:
        loaded = comfy.utils.load_torch_file(path, safe_load=True)
        info = {k: v for k, v in loaded.items() if isinstance(v, str)}
    if info.get(ROLE_KEY) != role:
        raise RuntimeError(f"{invalid}\n\nFile path: {path}")
    info["path"] = path
    return info


@dataclass(frozen=True)
class FaceRef:
    """A reference face found by InsightFace: the picture (RGB uint8) and its five key points."""

    image: Any  # numpy [H, W, 3] uint8, RGB
    kps: Any  # numpy [5, 2] float32
    embedding: Any  # numpy [512] float32, normalised


@dataclass(frozen=True)
class Patch:
    """One change applied to a MODEL; ``identity`` is how strongly it pulls toward ``faces``."""

    kind: str
    weight: float = 1.0
    identity: float = 0.0
    faces: tuple[FaceRef, ...] = ()
    info: tuple[tuple[str, Any], ...] = ()


@dataclass
class StandInModel:
    """A MODEL: checkpoint name, architecture, LoRAs and patches; cloned like a ModelPatcher."""

    checkpoint: str
    arch: str = "sdxl"
    loras: list[tuple[str, float, faces.FaceParams | None]] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    model_options: dict[str, Any] = field(default_factory=dict)

    def clone(self) -> StandInModel:
        return StandInModel(
            self.checkpoint, self.arch, list(self.loras), list(self.patches),
            dict(self.model_options),
        )  # fmt: skip

    def with_patch(self, patch: Patch) -> StandInModel:
        model = self.clone()
        model.patches.append(patch)
        return model

    # The ModelPatcher methods real patch nodes call (PAG, DifferentialDiffusion).
    def set_model_sampler_post_cfg_function(self, fn: Any, disable_cfg1_optimization: bool = False):
        owner = fn.__qualname__.split(".")[0]
        scale = inspect.getclosurevars(fn).nonlocals.get("scale", 1.0)
        self.patches.append(Patch(kind=owner, weight=float(scale)))

    def set_model_denoise_mask_function(self, fn: Any) -> None:
        self.patches.append(Patch(kind="DifferentialDiffusion"))

    def face_params(self) -> list[tuple[faces.FaceParams, float]]:
        """Faces carried by LoRAs, with their model strengths."""
        return [(face, strength) for _name, strength, face in self.loras if face is not None]

    def identity_refs(self) -> list[tuple[FaceRef, float]]:
        """Every reference face a patch pulls toward, with how strongly."""
        return [(ref, p.identity) for p in self.patches if p.identity > 0 for ref in p.faces[:1]]

    def kinds(self) -> list[str]:
        return [p.kind for p in self.patches]


@dataclass
class StandInClip:
    """A CLIP: tokenises to the text itself; the conditioning carries the text."""

    checkpoint: str
    loras: list[tuple[str, float]] = field(default_factory=list)

    def clone(self) -> StandInClip:
        return StandInClip(self.checkpoint, list(self.loras))

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, str]:
        return {"text": text}

    def encode_from_tokens_scheduled(
        self,
        tokens: dict[str, str],
        unprojected: bool = False,
        add_dict: dict[str, Any] | None = None,
        show_pbar: bool = True,
    ) -> list[list[Any]]:
        text = tokens["text"]
        seed = sum(ord(c) * (i + 1) for i, c in enumerate(text)) % (2**31)
        generator = torch.Generator().manual_seed(seed)
        cond = torch.randn((1, 77, 2048), generator=generator) * 0.1
        extra = {"pooled_output": cond[:, 0, :1280].clone(), "charpack_text": text}
        extra.update(add_dict or {})
        return [[cond, extra]]


class TensorTags:
    """Remembers what produced a tensor (keyed by identity, forgotten when it is freed)."""

    def __init__(self) -> None:
        self._tags: dict[int, tuple[weakref.ref[torch.Tensor], Any]] = {}

    def put(self, tensor: torch.Tensor, tag: Any) -> None:
        key = id(tensor)
        self._tags[key] = (weakref.ref(tensor), tag)
        weakref.finalize(tensor, self._tags.pop, key, None)

    def get(self, tensor: torch.Tensor) -> Any:
        entry = self._tags.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]


LATENT_TAGS = TensorTags()


@dataclass
class StandInVae:
    """A VAE: decoding renders what the stand-in sampler recorded for the latent."""

    checkpoint: str

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        from . import render

        return render.decode(samples, LATENT_TAGS.get(samples))

    def decode_tiled(self, samples: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.decode(samples)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        from . import render

        return render.encode(pixels)

    def encode_tiled(self, pixels: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.encode(pixels)

    def spacial_compression_decode(self) -> int:
        return 8

    def spacial_compression_encode(self) -> int:
        return 8

    def temporal_compression_decode(self) -> None:
        return None


@dataclass
class StandInControlNet:
    """A CONTROL_NET: the real ControlNetApplyAdvanced sets its hint and chains it."""

    name: str
    hint: torch.Tensor | None = None
    strength: float = 1.0
    percent: tuple[float, float] = (0.0, 1.0)
    previous: StandInControlNet | None = None

    def copy(self) -> StandInControlNet:
        return dataclasses.replace(self)

    def set_cond_hint(
        self,
        cond_hint: torch.Tensor,
        strength: float = 1.0,
        timestep_percent_range: tuple[float, float] = (0.0, 1.0),
        vae: Any = None,
        extra_concat: Any = None,
    ) -> StandInControlNet:
        self.hint, self.strength, self.percent = cond_hint, strength, timestep_percent_range
        return self

    def set_previous_controlnet(self, controlnet: StandInControlNet | None) -> StandInControlNet:
        self.previous = controlnet
        return self


@dataclass(frozen=True)
class StandInClipVision:
    """A CLIP_VISION: the file it came from."""

    name: str


def lora_face(info: dict[str, Any]) -> faces.FaceParams | None:
    """The face a LoRA file carries in its metadata, if any."""
    raw = info.get("face")
    if not raw:
        return None
    data = json.loads(raw)
    return faces.FaceParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def conditioning_text(conditioning: list[list[Any]]) -> str:
    """The prompt texts a CONDITIONING was encoded from, joined."""
    return " ".join(str(extra.get("charpack_text", "")) for _cond, extra in conditioning)


def conditioning_controls(conditioning: list[list[Any]]) -> list[StandInControlNet]:
    """Every control net attached to a CONDITIONING (following the chains)."""
    found: list[StandInControlNet] = []
    for _cond, extra in conditioning:
        control = extra.get("control")
        while isinstance(control, StandInControlNet):
            found.append(control)
            control = control.previous
    return found
