"""Stand-ins for the model-bound ComfyUI core nodes: subclasses that override only the work.

Each class inherits the real node's schema (``INPUT_TYPES``, outputs, category, description) and
replaces only its execution method, so ``/object_info`` is the real one by construction and file
combos list what is in the server's model folders. The registry puts them under the core names.
Core nodes that merely call methods on the objects they receive (CLIPTextEncode, VAEDecode,
VAEEncode, ControlNetApplyAdvanced, PerturbedAttentionGuidance, DifferentialDiffusion) are not
replaced: the stand-in objects implement those methods.

One checkpoint is real: ``arch=sdxl-tiny-real`` (``tinymodels.TINY_SDXL``) loads as ComfyUI's own
``ModelPatcher`` around a tiny ``model_base.SDXL`` with the file's weights, so the real training
nodes (``TrainLoraNode``) train it; the LoRA loaders apply a LoRA to such a model with ComfyUI's
own code.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import nodes
import torch

from .objects import (
    LATENT_TAGS,
    StandInClip,
    StandInClipVision,
    StandInControlNet,
    StandInModel,
    StandInVae,
    conditioning_text,
    lora_face,
    read_model_file,
)
from .render import Recipe, Source

log = logging.getLogger(__name__)


def step_seconds() -> float:
    """Simulated work per sampler step (``CHARPACK_STANDIN_STEP_SECONDS``; 0 by default)."""
    return float(os.environ.get("CHARPACK_STANDIN_STEP_SECONDS") or 0.0)


def require_model(model: Any, node: str) -> StandInModel:
    if not isinstance(model, StandInModel):
        raise ValueError(
            f"{node} (stand-in) received a MODEL it cannot use ({type(model).__name__}); in the "
            "test server every MODEL must come from the stand-in CheckpointLoaderSimple"
        )
    return model


TINY_REAL_ARCH = "sdxl-tiny-real"  # tinymodels.TINY_SDXL_ARCH (tinymodels is not importable here)
UNET_PREFIX = "model.diffusion_model."


def load_tiny_real_model(info: dict[str, Any]) -> comfy.model_patcher.ModelPatcher:
    """The file's tiny SDXL U-Net as ComfyUI builds a model: its config (from the file's
    metadata) through ``supported_models.SDXL``, its weights, a ``ModelPatcher``."""
    config = json.loads(info["unet_config"])
    model = comfy.supported_models.SDXL(config).get_model({})
    weights = comfy.utils.load_torch_file(info["path"], safe_load=True)
    model.load_model_weights(weights, UNET_PREFIX)
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


class CheckpointLoaderSimple(nodes.CheckpointLoaderSimple):
    def load_checkpoint(self, ckpt_name: str) -> tuple[Any, ...]:
        info = read_model_file(
            "checkpoints", ckpt_name, role="checkpoint",
            invalid=f"ERROR: Could not detect model type of: {ckpt_name}",
        )  # fmt: skip
        log.info("stand-in checkpoint %s loaded", ckpt_name)
        arch = info.get("arch", "sdxl")
        model = (
            load_tiny_real_model(info) if arch == TINY_REAL_ARCH else StandInModel(ckpt_name, arch)
        )
        return (model, StandInClip(ckpt_name), StandInVae(ckpt_name))


class LoraLoader(nodes.LoraLoader):
    def load_lora(
        self, model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float
    ) -> tuple[Any, Any]:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        if isinstance(model, comfy.model_patcher.ModelPatcher):
            # A real model (the tiny SDXL): ComfyUI's own loader applies the file to it; the
            # stand-in CLIP takes no LoRA.
            real, _ = nodes.LoraLoader.load_lora(self, model, None, lora_name, strength_model, 0)
            return (real, clip)
        try:
            info = read_model_file("loras", lora_name, role="lora", invalid="not a LoRA")
        except RuntimeError:
            # A real LoRA loader warns about every key it cannot map and changes nothing.
            log.warning("lora key not loaded: %s is not a LoRA file", lora_name)
            return (model, clip)
        face = lora_face(info)
        if model is not None:
            model = require_model(model, "LoraLoader").clone()
            model.loras.append((lora_name, float(strength_model), face))
        if clip is not None:
            clip = clip.clone()
            clip.loras.append((lora_name, float(strength_clip)))
        return (model, clip)


class LoraLoaderModelOnly(nodes.LoraLoaderModelOnly):
    load_lora = LoraLoader.load_lora


class ControlNetLoader(nodes.ControlNetLoader):
    def load_controlnet(self, control_net_name: str) -> tuple[StandInControlNet]:
        read_model_file(
            "controlnet", control_net_name, role="controlnet",
            invalid=(
                "ERROR: controlnet file is invalid and does not contain a valid controlnet model."
            ),
        )  # fmt: skip
        return (StandInControlNet(control_net_name),)


class CLIPVisionLoader(nodes.CLIPVisionLoader):
    def load_clip(self, clip_name: str) -> tuple[StandInClipVision]:
        read_model_file(
            "clip_vision", clip_name, role="clip_vision",
            invalid="ERROR: clip vision file is invalid and does not contain a valid vision model.",
        )  # fmt: skip
        return (StandInClipVision(clip_name),)


class KSampler(nodes.KSampler):
    def sample(
        self,
        model: Any,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: dict[str, Any],
        denoise: float = 1.0,
    ) -> tuple[dict[str, Any]]:
        model = require_model(model, "KSampler")
        samples = latent_image["samples"]
        progress = comfy.utils.ProgressBar(steps)
        delay = step_seconds()
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if delay:
                time.sleep(delay)  # simulated GPU work, so tests can catch a job while it runs
            progress.update(1)
        tag = LATENT_TAGS.get(samples)
        source = tag if isinstance(tag, Source | Recipe) and denoise < 1.0 else None
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(samples.shape, generator=generator)
        out_samples = samples.float() * (1.0 - denoise) + noise * denoise
        recipe = Recipe(
            seed=int(seed), steps=int(steps), cfg=float(cfg), denoise=float(denoise),
            model=model.clone(), positive=conditioning_text(positive),
            negative=conditioning_text(negative), width=samples.shape[3] * 8,
            height=samples.shape[2] * 8, batch=samples.shape[0], source=source,
        )  # fmt: skip
        LATENT_TAGS.put(out_samples, recipe)
        out = latent_image.copy()
        out["samples"] = out_samples
        return (out,)


# Core name -> stand-in class; the registry swaps these into ComfyUI's NODE_CLASS_MAPPINGS.
CORE_STANDINS: dict[str, type] = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "ControlNetLoader": ControlNetLoader,
    "CLIPVisionLoader": CLIPVisionLoader,
    "KSampler": KSampler,
}
