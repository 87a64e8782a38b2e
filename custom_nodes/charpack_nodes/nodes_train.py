"""Character training nodes: CharpackSaveTrainedLoRA and CharpackFaceCheck.

``CharpackSaveTrainedLoRA`` takes the LoRA that ComfyUI's own ``TrainLoraNode`` trained and
writes it where the loaders and the next training chunk find it:
``models/loras/<name>_<steps>_steps_lora.safetensors`` (the first ``loras`` folder). The
``_<steps>_steps_`` part is what ``TrainLoraNode``'s ``existing_lora`` parses the step count
from, so a saved chunk can be continued. A file is never overwritten: when the name is taken
the node writes ``…_lora-2.safetensors``, ``-3`` …; the file appears whole (written under a
temporary name, then hard-linked into place, which fails rather than replaces). The same file
is linked (copied where links are refused) to ``output/charpack_loras/<same path>``, so a client
downloads it through ``/view`` (type ``output``). A loss that is not finite stops the prompt
before anything is written: such a LoRA would only spoil the model it is applied to.

``CharpackFaceCheck`` counts the faces in a picture with the preset InsightFace pack
(``IdentitySpec``, ``ops/identity.py``), for the reference checks of character creation.

Both are output nodes; clients read their results from ``/history`` (UI outputs described on
each node).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from typing import Any

import folder_paths
import safetensors.torch
import torch
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from .nodes_identity import insightface_root
from .ops import identity
from .ops.images import rgb_uint8
from .ops.saving import part_name
from .pipelines import IdentitySpec, catalog
from .pipelines.names import name_problem

log = logging.getLogger("charpack_nodes.train")

SAVE_NODE = catalog.SAVE_TRAINED_LORA.class_type
FACE_NODE = catalog.FACE_CHECK.class_type
DOWNLOAD_FOLDER = "charpack_loras"  # output/<this>/<name>…: what /view serves for download
MAX_LORA_NAME = 200
STEPS_MARK = "_steps_"  # TrainLoraNode reads the step count just before it
MAX_SUFFIX = 1000
_PRESET = IdentitySpec()


def lora_name_problem(name: object) -> str | None:
    """Why ``name`` (a stem relative to models/loras, ``/``-separated) cannot be used, or None."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if len(name) > MAX_LORA_NAME:
        return f"is {len(name)} characters long; keep it within {MAX_LORA_NAME}"
    if name.startswith("/") or os.path.isabs(name):
        return "is an absolute path (it must be relative to models/loras)"
    if "\\" in name:
        return "contains '\\' (separate folders with '/')"
    if STEPS_MARK in name:
        return f"contains {STEPS_MARK!r} (TrainLoraNode reads the step count after it)"
    for part in name.split("/"):
        if part == "":
            return "has an empty folder name ('//' or a '/' at either end)"
        if part == "..":
            return "contains '..' (it must stay inside models/loras)"
        problem = name_problem(part)
        if problem is not None:
            return f"has a part {part!r} that {problem}"
    return None


def check_metadata(text: str) -> dict[str, str]:
    """The ``metadata`` input: a JSON object of string keys to string values."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{SAVE_NODE}: metadata is not JSON ({error}); give a JSON object such as "
            '{"charpack_character": "ava"}'
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(
            f"{SAVE_NODE}: metadata must be a JSON object of strings to strings (safetensors "
            'headers hold only strings), e.g. {"charpack_character": "ava", "steps": "250"}'
        )
    return value


def check_losses(losses: list[float], steps: int) -> None:
    """Refuse a training whose loss is NaN or infinite (the LoRA would be garbage)."""
    first = steps - len(losses)  # steps trained before this prompt (a continued LoRA)
    for index, value in enumerate(losses, start=1):
        if not math.isfinite(value):
            raise ValueError(
                f"{SAVE_NODE}: training diverged: loss {value} at step {first + index} "
                f"(step {index} of {len(losses)} in this run); nothing was saved. Train with "
                "training_dtype and lora_dtype bf16 (fp16 gives NaN losses) and a lower "
                "learning_rate (5e-5 with a warm-up), then run the training again"
            )


def _inside(root: str, path: str) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def _candidates(name: str, steps: int) -> Any:
    base = f"{name}_{steps}{STEPS_MARK}lora"
    yield f"{base}.safetensors"
    for index in range(2, MAX_SUFFIX + 1):
        yield f"{base}-{index}.safetensors"


def _link_or_copy(source: str, target: str) -> None:
    """``target`` becomes ``source``'s content; never replaces an existing ``target``."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # another file system, or links refused: copy
    part = part_name(target)
    shutil.copyfile(source, part)
    try:
        os.link(part, target)
    except FileExistsError:
        raise
    except OSError:
        if os.path.exists(target):
            raise FileExistsError(target) from None
        os.replace(part, target)
        return
    finally:
        if os.path.exists(part):
            os.unlink(part)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_lora(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    *,
    loras_root: str,
    output_root: str,
    name: str,
    steps: int,
) -> str:
    """Write the LoRA under the first free candidate name (relative to ``loras_root``) and
    link it into ``output_root``; returns that relative name (``/``-separated)."""
    first_folder = os.path.join(loras_root, *name.split("/")[:-1])
    out_folder = os.path.join(output_root, *name.split("/")[:-1])
    for root, folder in ((loras_root, first_folder), (output_root, out_folder)):
        os.makedirs(folder, exist_ok=True)
        if not _inside(root, folder):
            raise ValueError(
                f"{SAVE_NODE}: name {name!r} leads to {os.path.realpath(folder)}, outside "
                f"{root} (a symlinked folder); remove the link or choose another name"
            )
    part = part_name(os.path.join(first_folder, os.path.basename(name)))
    clean = {key: value.detach().contiguous() for key, value in tensors.items()}
    safetensors.torch.save_file(clean, part, metadata=metadata or None)
    try:
        for relative in _candidates(name, steps):
            target = os.path.join(loras_root, *relative.split("/"))
            copy = os.path.join(output_root, *relative.split("/"))
            if os.path.lexists(target) or os.path.lexists(copy):
                continue
            try:
                os.link(part, target)  # fails, never replaces, when the name was just taken
            except FileExistsError:
                continue
            except OSError:
                os.replace(part, target)  # no hard links here: the name was free a moment ago
            try:
                _link_or_copy(target, copy)
            except FileExistsError:
                log.warning("%s: download copy %s appeared meanwhile; kept it", SAVE_NODE, copy)
            return relative
    finally:
        if os.path.exists(part):
            os.unlink(part)
    raise ValueError(
        f"{SAVE_NODE}: {MAX_SUFFIX} LoRA files named {name!r} with {steps} steps exist already; "
        "choose another name (e.g. the next version)"
    )


class CharpackSaveTrainedLoRA(io.ComfyNode):
    """Facade over ``write_lora``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=SAVE_NODE,
            display_name="Save trained LoRA (charpack)",
            category="charpack/training",
            description="Saves a LoRA trained by Train LoRA into models/loras/<name>_<steps>"
            "_steps_lora.safetensors (never overwriting: -2, -3 … when taken), links it under "
            "output/charpack_loras/ for download, and refuses a training whose loss diverged.",
            inputs=[
                io.Custom("LORA_MODEL").Input(
                    "lora", tooltip="The LoRA weights from Train LoRA's 'lora' output."
                ),
                io.Custom("LOSS_MAP").Input(
                    "loss", tooltip="Train LoRA's 'loss_map': every loss must be finite."
                ),
                io.Int.Input(
                    "steps",
                    min=0,
                    max=10_000_000,
                    force_input=True,
                    tooltip="Total steps trained: Train LoRA's 'steps' output (part of the "
                    "file name, where a continued training reads it).",
                ),
                io.String.Input(
                    "name",
                    default="charpack/character-v1",
                    tooltip="File name stem relative to models/loras, folders separated by '/' "
                    "(e.g. charpack/ava/ava-v1); no '..', '\\', control characters or "
                    f"'{STEPS_MARK}', at most {MAX_LORA_NAME} characters.",
                ),
                io.String.Input(
                    "metadata",
                    default="{}",
                    multiline=True,
                    tooltip="JSON object of strings written into the safetensors header.",
                ),
            ],
            outputs=[],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        # Never a cache hit: a cached saver would report an earlier prompt's file (which may
        # be gone); the prompt id differs per prompt.
        context = get_executing_context()
        return None if context is None else context.prompt_id

    @classmethod
    def execute(
        cls, lora: dict[str, torch.Tensor], loss: dict[str, Any], steps: int, name: str,
        metadata: str = "{}",
    ) -> io.NodeOutput:  # fmt: skip
        problem = lora_name_problem(name)
        if problem is not None:
            raise ValueError(
                f"{SAVE_NODE}: name {name!r} {problem}; use a relative stem such as "
                "'charpack/ava/ava-v1' (letters, digits, '-', '_', '.', folders with '/')"
            )
        header = check_metadata(metadata)
        losses = [float(v) for v in (loss or {}).get("loss", [])]
        check_losses(losses, steps)
        if not lora:
            raise ValueError(f"{SAVE_NODE}: the LoRA has no tensors; connect Train LoRA's 'lora'")
        loras_root = folder_paths.get_folder_paths(catalog.FOLDER_LORAS)[0]
        output_root = os.path.join(folder_paths.get_output_directory(), DOWNLOAD_FOLDER)
        relative = write_lora(
            lora, header, loras_root=loras_root, output_root=output_root, name=name, steps=steps
        )
        path = os.path.join(loras_root, *relative.split("/"))
        digest, size = sha256_file(path), os.path.getsize(path)
        folder, _, filename = relative.rpartition("/")
        mean = sum(losses) / len(losses) if losses else float("nan")
        shown = f"mean loss {mean:.3f}" if losses else "no losses reported"
        log.info("%s: saved %s (%d steps, %s)", SAVE_NODE, relative, steps, shown)
        entry = {
            "lora_name": relative,
            "filename": filename,
            "subfolder": "/".join(p for p in (DOWNLOAD_FOLDER, folder) if p),
            "type": "output",
            "sha256": digest,
            "bytes": size,
            "steps": steps,
        }
        ui = {
            "charpack_lora": [entry],
            "loss": losses,
            "text": [f"saved {relative} ({steps} steps, {shown})"],
        }
        return io.NodeOutput(ui=ui)


def count_faces(picture: Any) -> dict[str, Any]:
    """Faces InsightFace finds in one RGB uint8 picture (boxes in pixels, highest score first)."""
    analysis = identity.face_analysis(
        root=insightface_root(), pack=_PRESET.model_pack, provider=_PRESET.provider
    )
    faces = analysis.get(picture[:, :, ::-1].copy())  # InsightFace wants BGR
    faces = sorted(faces, key=lambda f: -float(f.det_score))
    return {
        "count": len(faces),
        "det_scores": [round(float(f.det_score), 4) for f in faces],
        "boxes": [[round(float(v), 1) for v in f.bbox[:4]] for f in faces],
        "width": int(picture.shape[1]),
        "height": int(picture.shape[0]),
    }


class CharpackFaceCheck(io.ComfyNode):
    """Facade over ``count_faces``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=FACE_NODE,
            display_name="Face check (charpack)",
            category="charpack/identity",
            description="Counts the faces in each image with the preset InsightFace pack "
            f"({_PRESET.model_pack}, {_PRESET.provider}), so a face reference with no face or "
            "several faces is found before training.",
            inputs=[
                io.Image.Input("image", tooltip="The picture(s) to check."),
                io.String.Input(
                    "label", default="", tooltip="Reported with the result (e.g. the file name)."
                ),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image: torch.Tensor, label: str) -> io.NodeOutput:
        results = []
        for index in range(int(image.shape[0])):
            try:
                found = count_faces(rgb_uint8(image[index]))
            except identity.IdentityError as error:
                raise ValueError(f"{FACE_NODE}: {error}") from None
            results.append({"label": label, "index": index, **found})
        return io.NodeOutput(ui={"faces": results})
