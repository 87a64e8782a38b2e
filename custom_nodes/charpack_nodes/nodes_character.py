"""CharpackCharacter: everything that makes the character, bundled into one CHARACTER value.

The value is a ``pipelines.CharacterSpec`` (checkpoint, LoRA and strength, trigger word, face
references, attributes, prompt prefix/suffix, negatives), the same type the orchestrator builds
from a pack file, so a graph-editor user and a pack file describe a character the same way.
File choices come from ComfyUI's model and input folders like the core loaders'; both face
images are upload combos (the second one's button comes from ``web/uploads.js``: the frontend
gives a node one, for its first required upload combo). Names are checked when the prompt is
queued, before any GPU time is spent, and each wrong name is reported once, under its own input:
ComfyUI 0.3.75 files a ``validate_inputs`` failure under every input that method takes
(execution.py, ``validate_inputs``: one ``custom_validation_failed`` per argument), so the
method takes ``face_image`` alone, and the other file combos are :class:`ListedCombo` inputs,
which ComfyUI checks itself (``value_not_in_list``) as it checks the core loaders'.
"""

from __future__ import annotations

import hashlib
import os

import folder_paths
from comfy_api.latest import io

from .ops import specs
from .pipelines import LoraSpec, ParameterError, catalog
from .pipelines.checks import bounds
from .widgets import Character, ListedCombo, widget_round

NODE = "CharpackCharacter"
_C = specs.DEFAULTS.character
_LORA = _C.lora or LoraSpec()  # the widgets show the preset LoRA's strength
_LORA_RANGE = bounds(LoraSpec, "strength_model")  # model and clip share one widget


def _input_images() -> list[str]:
    folder = folder_paths.get_input_directory()
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["image"]))


def _with_default(options: list[str], default: str) -> str | None:
    # A default that is not a choice would show a value the server then rejects.
    return default if default in options else None


def _missing_face(name: str) -> str:
    available = _input_images()
    shown = ", ".join(available[:10]) + (" …" if len(available) > 10 else "")
    return (
        f"{NODE}: face image {name!r} is not in ComfyUI's input folder (available: "
        f"{shown or 'none'}); upload it with the node's button or pick one of those"
    )


class CharpackCharacter(io.ComfyNode):
    """Facade over ``ops.specs.character_spec``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        checkpoints = folder_paths.get_filename_list(catalog.FOLDER_CHECKPOINTS)
        loras = [specs.NONE_CHOICE, *folder_paths.get_filename_list(catalog.FOLDER_LORAS)]
        images = _input_images()
        return io.Schema(
            node_id=NODE,
            display_name="Character (charpack)",
            category="charpack/character",
            description="Bundles checkpoint, identity LoRA and strength, trigger word, face "
            "reference(s), attributes, prompt prefix/suffix and negatives into one CHARACTER "
            "value for the charpack pipeline nodes.",
            inputs=[
                ListedCombo(
                    "ckpt_name",
                    options=checkpoints,
                    default=_with_default(checkpoints, _C.checkpoint),
                    tooltip="SDXL checkpoint (BigLove XL is the preset: realistic "
                    "skin; FLUX gave plastic skin).",
                ),
                ListedCombo(
                    "lora_name",
                    options=loras,
                    default=_with_default(loras, _LORA.name) or specs.NONE_CHOICE,
                    tooltip="The character's identity LoRA in models/loras, or None.",
                ),
                io.Float.Input(
                    "lora_strength",
                    default=_LORA.strength_model,
                    min=_LORA_RANGE[0],
                    max=_LORA_RANGE[1],
                    step=0.05,
                    round=widget_round(0.05),
                    tooltip="LoRA strength on model and clip; 0.7 lets the model "
                    "breathe (1.0 was too rigid).",
                ),
                io.String.Input(
                    "trigger",
                    default=_C.trigger,
                    tooltip="The LoRA's trigger word, put at the front of every prompt.",
                ),
                io.Combo.Input(
                    "face_image",
                    options=images,
                    upload=io.UploadType.image,
                    image_folder=io.FolderType.input,
                    tooltip="Face reference photo in ComfyUI's input folder: clear, "
                    "well lit, roughly front-facing.",
                ),
                ListedCombo(
                    "face_image_2",
                    options=[specs.NONE_CHOICE, *images],
                    default=specs.NONE_CHOICE,
                    upload=io.UploadType.image,
                    image_folder=io.FolderType.input,
                    optional=True,
                    tooltip="Optional second face reference (another angle); the "
                    "references are averaged.",
                ),
                io.String.Input(
                    "attributes",
                    multiline=True,
                    default="",
                    tooltip="One 'name: value' per line (hair, eyes, body …), "
                    "added to every prompt in this order.",
                ),
                io.String.Input(
                    "prompt_prefix",
                    default=_C.prompt_prefix,
                    tooltip="Text put before every prompt (e.g. 'photo of').",
                ),
                io.String.Input(
                    "prompt_suffix",
                    default=_C.prompt_suffix,
                    tooltip="Text put after every prompt (e.g. camera and film).",
                ),
                io.String.Input(
                    "negative",
                    multiline=True,
                    default=_C.negative,
                    tooltip="The character's negatives, used in every job.",
                ),
            ],
            outputs=[
                Character.Output(
                    display_name="character",
                    tooltip="The character, for the charpack pipeline nodes.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, face_image: str | None = None) -> bool | str:
        # face_image alone: ComfyUI files a failure here under every argument this method takes.
        # Annotated ("x.png [input]") and subfolder names count, as for the core LoadImage.
        if face_image is not None and not folder_paths.exists_annotated_filepath(face_image):
            return _missing_face(face_image)
        return True

    @classmethod
    def fingerprint_inputs(
        cls, face_image: str | None = None, face_image_2: str | None = None, **_: object
    ) -> str:
        # Same name, new picture: the character (and every macro using it) must run again.
        digest = hashlib.sha256()
        for image in (face_image, face_image_2):
            if image in (None, specs.NONE_CHOICE):
                continue
            path = folder_paths.get_annotated_filepath(image)
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    digest.update(handle.read())
        return digest.hexdigest()

    @classmethod
    def execute(
        cls,
        ckpt_name: str,
        lora_name: str,
        lora_strength: float,
        trigger: str,
        face_image: str,
        attributes: str,
        prompt_prefix: str,
        prompt_suffix: str,
        negative: str,
        face_image_2: str | None = None,
    ) -> io.NodeOutput:
        try:
            character = specs.character_spec(
                ckpt_name=ckpt_name, lora_name=lora_name, lora_strength=lora_strength,
                trigger=trigger, face_image=face_image, face_image_2=face_image_2,
                attributes=attributes, prompt_prefix=prompt_prefix,
                prompt_suffix=prompt_suffix, negative=negative,
            )  # fmt: skip
        except ParameterError as error:
            raise ValueError(f"{NODE}: {error.field}: {error.message}; change that input") from None
        return io.NodeOutput(character)
