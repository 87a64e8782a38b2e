"""Tiny, deterministic model files with the pipeline's real names, made by the test session.

Owns what goes into a test server's ``models/`` folder (``models.md`` §2/§3 names):

* ``upscale_models/4x-UltraSharp.pth``: a real ESRGAN (spandrel's architecture, 8 filters, one
  block, x4) that the real ``UpscaleModelLoader``/``ImageUpscaleWithModel`` run. Its trunk holds
  seeded random weights; the skip path is an identity, so the x4 output is the input enlarged
  (plus a faint seeded texture) and a face stays a face after the pipeline's upscale stage.
* placeholders for every other model file (checkpoint, LoRAs, IP-Adapter, CLIP vision, InstantID,
  its ControlNet, the pose ControlNet, SAM, the YOLO detectors): small but valid safetensors /
  torch files whose ``charpack_standin`` entry names their role, read by the stand-in loaders
  through ComfyUI's own ``comfy.utils.load_torch_file``. The character LoRA carries the example
  character's face.
* ``checkpoints/tiny-sdxl-train.safetensors``: the *real* weights (small seeded random values) of
  a tiny SDXL-shaped U-Net (``TINY_SDXL_CONFIG``, 2.39 M parameters, ``training.md`` §2), with
  metadata ``charpack_standin=checkpoint``, ``arch=sdxl-tiny-real`` and the config itself. The
  stand-in ``CheckpointLoaderSimple`` turns it into a real ``ModelPatcher``, so ComfyUI's own
  ``TrainLoraNode`` trains it and its own LoRA loader applies the result.
* InsightFace packs ``insightface/models/buffalo_l`` and ``.../antelopev2``, each with the tiny
  SCRFD-shaped detector and ArcFace-shaped recogniser of ``tinyface.py`` under the real file names.

Run inside the ComfyUI test environment (torch, spandrel, onnx): ``python -m tests.comfy.tinymodels
OUT_DIR`` from the repository root. ``install.py`` calls it once per source change and caches the
result; test servers get a copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROLE_KEY = "charpack_standin"

# models/<folder>/<file> -> role the stand-in loader expects.
PLACEHOLDERS: dict[str, str] = {
    "checkpoints/bigLoveXL.safetensors": "checkpoint",
    "loras/character_lora.safetensors": "lora",
    "loras/ip-adapter-faceid-plusv2_sdxl_lora.safetensors": "lora",
    "ipadapter/ip-adapter-faceid-plusv2_sdxl.bin": "ipadapter",
    "clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors": "clip_vision",
    "instantid/ip-adapter.bin": "instantid",
    "controlnet/instantid/diffusion_pytorch_model.safetensors": "controlnet",
    "controlnet/controlnet-canny-sdxl-1.0.safetensors": "controlnet",  # scenes with a pose
    "sams/sam_vit_b_01ec64.pth": "sam",
    "ultralytics/bbox/face_yolov8m.pt": "ultralytics_bbox",
    "ultralytics/segm/person_yolov8m-seg.pt": "ultralytics_segm",
}
UPSCALER = "upscale_models/4x-UltraSharp.pth"
# pack -> (detector file, recogniser file, projection seed): the real packs' file names.
INSIGHTFACE_PACKS: dict[str, tuple[str, str, int]] = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx", 1),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx", 2),
}
TINY_SDXL = "checkpoints/tiny-sdxl-train.safetensors"
TINY_SDXL_ARCH = "sdxl-tiny-real"
# ComfyUI's SDXL U-Net config (comfy/model_detection.py) shrunk: 32 channels, two levels, one
# transformer block each where SDXL has them; context 2048 and ADM 2816 as in SDXL, so SDXL
# conditioning (``[1, 77, 2048]`` + pooled ``[1, 1280]``) drives it unchanged.
TINY_SDXL_CONFIG: dict[str, Any] = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "num_classes": "sequential",
    "adm_in_channels": 2816, "in_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
    "transformer_depth": [0, 1], "channel_mult": [1, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 16,
    "transformer_depth_output": [0, 0, 1, 1], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}  # fmt: skip
TINY_SDXL_PREFIX = "model.diffusion_model."  # as in a real SDXL checkpoint
# Sources whose change must rebuild the models (relative to this folder).
SOURCES = ("tinymodels.py", "tinyface.py", "standins/faces.py")


def tiny_esrgan():  # type: ignore[no-untyped-def]
    """The x4 ESRGAN: identity skip path, seeded random trunk."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    trunk = {id(m) for m in net.model[1].modules() if isinstance(m, torch.nn.Conv2d)}
    with torch.no_grad():
        for conv in convs:
            if id(conv) in trunk:
                # Small random weights: the residual trunk adds a faint texture, nothing more.
                conv.weight.mul_(0.05)
                conv.bias.zero_()
                continue
            # Every other conv passes the three colour channels straight through.
            conv.weight.zero_()
            conv.bias.zero_()
            for channel in range(min(3, conv.in_channels, conv.out_channels)):
                conv.weight[channel, channel, 1, 1] = 1.0
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def comfy_on_cpu() -> None:
    """Make ComfyUI importable (the tree beside this venv) and keep it off CUDA, when the
    builder runs without the ComfyUI tree on its path (``install.py`` gives only the stubs)."""
    try:
        import comfy  # noqa: F401
    except ImportError:
        sys.path.append(str(Path(sys.prefix).parent / "ComfyUI"))
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported: the CPU torch has no CUDA


def tiny_sdxl_model(config: dict[str, Any]) -> Any:
    """ComfyUI's own ``model_base.SDXL`` for ``config``, weights uninitialised (ComfyUI's ops
    skip initialisation)."""
    comfy_on_cpu()
    import comfy.supported_models

    return comfy.supported_models.SDXL(dict(config)).get_model({})


def tiny_sdxl_weights() -> dict[str, Any]:
    """Seeded small random U-Net weights (uninitialised ones give NaN losses): scaled by
    1/sqrt(fan-in) for matrices and kernels, norms at 1, biases near 0."""
    import torch

    model = tiny_sdxl_model(TINY_SDXL_CONFIG)
    generator = torch.Generator().manual_seed(11)
    weights = {}
    for name, tensor in model.diffusion_model.state_dict().items():
        if tensor.ndim >= 2:
            scale = tensor[0].numel() ** -0.5
            value = torch.randn(tensor.shape, generator=generator) * scale
        elif name.endswith("weight"):  # a 1-D weight here is a norm's scale
            value = torch.ones(tensor.shape)
        else:
            value = torch.randn(tensor.shape, generator=generator) * 0.01
        weights[TINY_SDXL_PREFIX + name] = value.to(torch.float32).contiguous()
    return weights


def _write_tiny_sdxl(path: Path) -> None:
    from safetensors.torch import save_file

    metadata = {
        ROLE_KEY: "checkpoint",
        "arch": TINY_SDXL_ARCH,
        "unet_config": json.dumps(TINY_SDXL_CONFIG, sort_keys=True),
        "file": path.name,
    }
    save_file(tiny_sdxl_weights(), str(path), metadata=metadata)


def _face_json() -> str:
    from tests.comfy.standins.faces import AVA

    return json.dumps(dataclasses.asdict(AVA), sort_keys=True)


def _write_placeholder(path: Path, role: str) -> None:
    import torch
    from safetensors.torch import save_file

    # A deterministic, recognisable tensor so the files are real model files, not empty stubs.
    weight = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 16
    if path.suffix == ".safetensors":
        metadata = {ROLE_KEY: role, "file": path.name}
        if path.name == "character_lora.safetensors":
            metadata["face"] = _face_json()
        save_file({"standin.weight": weight}, str(path), metadata=metadata)
    else:
        torch.save({ROLE_KEY: role, "file": path.name, "weight": weight}, path)


def build(out: Path) -> None:
    """Write the whole ``models/`` tree into ``out`` (created if missing)."""
    import onnx
    import torch

    from tests.comfy import tinyface

    for rel, role in PLACEHOLDERS.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_placeholder(path, role)
    upscaler = out / UPSCALER
    upscaler.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_esrgan(), upscaler)
    _write_tiny_sdxl(out / TINY_SDXL)

    detector = tinyface.detector()
    stats = tinyface.face_statistics()
    for pack, (det_name, rec_name, seed) in INSIGHTFACE_PACKS.items():
        folder = out / "insightface" / "models" / pack
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(detector, folder / det_name)
        onnx.save(tinyface.recogniser(stats=stats, seed=seed), folder / rec_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to become a ComfyUI models/ directory")
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
