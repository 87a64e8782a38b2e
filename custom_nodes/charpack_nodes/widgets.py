"""The macro nodes' shared inputs and their expansion, in ComfyUI's V3 schema.

Owns one input factory per setting in ``ops/specs.SETTINGS`` (default = the preset from
``pipelines/params.py``, range = the range the parameter type declares on the field (read with
``checks.bounds``, never copied), a tooltip saying why the
preset is what it is), the CHARACTER socket type, and :func:`expand`: build a
``pipelines`` subgraph under the node's own id and hand it to ComfyUI as a node expansion.
Imported by ComfyUI's loader only (through ``comfy_entrypoint``), never at package import.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import folder_paths
from comfy_api.latest import io

from .ops import specs
from .pipelines import Built, ParameterError, catalog, params
from .pipelines.checks import bounds

log = logging.getLogger("charpack_nodes.macros")


class ListedCombo(io.Combo.Input):
    """A combo whose type is its list of choices, as a V1 loader declares its file combo.

    ComfyUI 0.3.75 checks a value against a combo's choices only when the type is that list
    (execution.py ``validate_inputs``: ``isinstance(input_type, list)``); a V3 combo's type is
    the string ``"COMBO"`` and is never checked. The frontend reads both forms as a dropdown.
    """

    def get_io_type(self) -> Any:
        return list(self.options)


# Carries a pipelines.CharacterSpec from CharpackCharacter to the macro nodes.
Character = io.Custom("CHARPACK_CHARACTER")

_TIPS: dict[str, str] = {
    "seed": "Noise seed; the same seed and settings give the same image.",
    "steps": "Base sampler steps.",
    "cfg": "Classifier-free guidance; 4.0 is the preset (7 made SDXL grainy, 4.0 removed it).",
    "sampler_name": "Sampler for every sampling pass (base and face passes).",
    "scheduler": "Noise schedule for every sampling pass.",
    "width": "Base width in pixels (832 with height 1216 is an SDXL-native portrait bucket).",
    "height": "Base height in pixels (the upscale multiplies it by 4).",
    catalog.STAGE_FACEID: "Apply one IP-Adapter FaceID Plus V2 (face only; style comes from the "
    "prompt).",
    "faceid_weight": "FaceID strength; higher copies the reference more, follows the prompt less.",
    catalog.STAGE_INSTANTID: "Run the InstantID face post-fix after generation (lifts likeness "
    "~85% -> ~95%).",
    "instantid_weight": "InstantID strength; 0.85 fixes the face without making it plastic.",
    "instantid_mode": "detailer: re-sample only the face crop with InstantID's identity attention "
    "(keeps the body); img2img: whole-frame pass keyed to the generated face.",
    "instantid_steps": "Sampler steps of the InstantID pass.",
    catalog.STAGE_FACE_DETAILER: "Run FaceDetailer (face_yolov8m + SAM) to add face and skin "
    "detail.",
    "detailer_denoise": "FaceDetailer denoise; 0.4 adds detail without changing the identity.",
    "detailer_steps": "Sampler steps of the FaceDetailer pass.",
    catalog.STAGE_UPSCALE: "Upscale 4x with an upscale model (832x1216 -> 3328x4864).",
    "upscale_model": "Upscale model in models/upscale_models (4x-UltraSharp is the preset).",
    "output_scale": "Resize after the 4x pass; 0.5 gives 2x files at a quarter of the bytes.",
    catalog.STAGE_PAG: "Perturbed-Attention Guidance on the base sampler (about +50% sampling "
    "time).",
    "pag_scale": "PAG strength.",
}


def setting(name: str, *, optional: bool = False) -> io.Input:
    """The V3 input for a macro setting, defaulting to its preset."""
    default = specs.preset(name)
    tip = _TIPS[name]
    if name == "seed":
        return io.Int.Input(
            name,
            default=default,
            min=0,
            max=params.MAX_SEED,
            control_after_generate=True,
            tooltip=tip,
            optional=optional,
        )
    # Combos whose type is their list, so ComfyUI itself refuses a wrong value before anything
    # runs, once and under that input (a validate_inputs error is filed under every argument).
    if name == "sampler_name":
        return ListedCombo(
            name,
            options=list(params.SAMPLER_NAMES),
            default=default,
            tooltip=tip,
            optional=optional,
        )
    if name == "scheduler":
        return ListedCombo(
            name, options=list(params.SCHEDULERS), default=default, tooltip=tip, optional=optional
        )
    if name == "instantid_mode":
        return ListedCombo(
            name,
            options=list(params.INSTANTID_MODES),
            default=default,
            tooltip=tip,
            optional=optional,
        )
    if name == "upscale_model":
        return ListedCombo(
            name,
            options=folder_paths.get_filename_list(catalog.FOLDER_UPSCALE_MODELS),
            default=default,
            tooltip=tip,
            optional=optional,
        )
    if isinstance(default, bool):
        return io.Boolean.Input(name, default=default, tooltip=tip, optional=optional)
    low, high, step = widget_range(name)
    if isinstance(default, int):
        return io.Int.Input(
            name, default=default, min=low, max=high, step=step, tooltip=tip, optional=optional
        )
    return io.Float.Input(
        name,
        default=default,
        min=low,
        max=high,
        step=step,
        round=widget_round(step),
        tooltip=tip,
        optional=optional,
    )


# Widget increments (a UI matter); the ranges themselves come from the parameter types.
_STEPS: dict[str, float] = {
    "steps": 1,
    "cfg": 0.1,
    "width": params.SIZE_MULTIPLE,
    "height": params.SIZE_MULTIPLE,
    "faceid_weight": 0.05,
    "instantid_weight": 0.05,
    "instantid_steps": 1,
    "detailer_denoise": 0.01,
    "detailer_steps": 1,
    "output_scale": 0.05,
    "pag_scale": 0.1,
}


def widget_round(step: float) -> float:
    """The FLOAT widget's declared ``round``: the finest value its step's decimals can show.

    The editor keeps ``max(0, -floor(log10(step)))`` decimals of a FLOAT widget and snaps it to
    ``round`` (docs/workflows.md). Declared, the snapping is the node's own (the editor's "disable
    rounding" setting cannot change it), and every preset lies on it
    (tests/unit/test_widget_rounding.py).
    """
    decimals = max(0, -math.floor(math.log10(step)))
    return float(f"1e-{decimals}")


def widget_range(name: str) -> tuple[float, float, float]:
    """(min, max, step) of a numeric macro setting: the range its parameter type declares."""
    part, field_name = specs.SETTINGS[name]
    low, high = bounds(type(getattr(specs.DEFAULTS, part)), field_name)
    return low, high, _STEPS[name]


def character_input() -> io.Input:
    return Character.Input(
        "character",
        tooltip="The character (checkpoint, LoRA, face references, prompt parts) "
        "from a Character (charpack) node.",
    )


def prompt_inputs() -> list[io.Input]:
    return [
        io.String.Input(
            "prompt",
            multiline=True,
            default=specs.DEFAULTS.prompt,
            tooltip="Scene prompt; the character's prefix, trigger word, attributes "
            "and suffix are added around it.",
        ),
        io.String.Input(
            "negative",
            multiline=True,
            default=specs.DEFAULTS.negative,
            tooltip="Scene negatives, added after the character's negatives.",
        ),
    ]


def image_input(tip: str) -> io.Input:
    return io.Image.Input("image", tooltip=tip)


def image_output(tip: str) -> io.Output:
    return io.Image.Output(display_name="image", tooltip=tip)


def settings_error(node: str, error: ParameterError) -> str:
    return (
        f"{node}: {specs.widget_of(error.field) or error.field}: {error.message}; change that input"
    )


def spec_or_error(node: str, **values: Any) -> Any:
    """``specs.pipeline_spec`` with its range errors turned into the node's ValueError."""
    try:
        return specs.pipeline_spec(**values)
    except ParameterError as error:
        raise ValueError(settings_error(node, error)) from None


def expand(node: str, unique_id: Any, build: Callable[[str], Built]) -> io.NodeOutput:
    """Build the subgraph with ids prefixed by the node's own id and return it as an expansion.

    A node called once per item of a list input gets one prefix per call, so the calls'
    subgraphs never share ids.
    """
    if unique_id is None:
        raise ValueError(f"{node}: ComfyUI did not pass the node's id; run it inside ComfyUI")
    prefix = f"{unique_id}."
    try:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if context is not None and context.list_index:
            prefix = f"{unique_id}.{context.list_index}."
    except ImportError:  # older ComfyUI: no list-call context, one call per node
        pass
    built = build(prefix)
    log.debug("%s %s expands into %d nodes", node, unique_id, len(built.graph))
    return io.NodeOutput(built.image, expand=built.graph.finalize())
