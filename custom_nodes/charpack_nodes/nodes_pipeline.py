"""Macro nodes: the whole pipeline and each of its stages, as ComfyUI node expansions.

Each node turns its inputs into a ``PipelineSpec`` (presets for everything it does not show) and
expands into exactly the subgraph ``pipelines.build_pipeline`` / ``build_stage`` builds for that
spec, the graph the orchestrator sends. Node ids inside the expansion are the builder's stable
ids prefixed with the macro's own id (``12.base.sampler``), so two macros in one prompt never
clash and the server's progress messages say which stage runs. An upstream IMAGE arrives as a
live value and goes into the subgraph as one (the builders accept a link or a value).

The macros stop at the image: wire Identity score and Save pack (or any node) after them. The
macros that sample also output the ``seed`` they ran with (the prompt's value: the editor's
control_after_generate changes the widget only after queueing) and its ``parameters`` text
(``pipelines.parameters_text`` of the stages the node runs, A1111 style), for Save pack's
socket-only inputs. Both are plain values returned beside the expansion's image link: ComfyUI
0.3.75 resolves a pending expansion's results link by link and passes any other value through
unchanged (``execution.py``, ``pending_subgraph_results``), so no extra node is needed and the
subgraph stays exactly the orchestrator's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from comfy_api.latest import io

from .pipelines import (
    Built,
    CharacterSpec,
    PipelineSpec,
    build_pipeline,
    parameters_text,
)
from .pipelines import build_stage as _build_stage
from .pipelines import catalog as C
from .widgets import (
    character_input,
    expand,
    image_input,
    image_output,
    prompt_inputs,
    setting,
    spec_or_error,
)

SAMPLING = ("seed", "cfg", "sampler_name", "scheduler")
# Stages a node may leave out of its parameters text (their PipelineSpec fields are named so).
SWITCHED = (C.STAGE_FACEID, C.STAGE_INSTANTID, C.STAGE_FACE_DETAILER, C.STAGE_UPSCALE, C.STAGE_PAG)


def seed_output() -> io.Output:
    return io.Int.Output(
        display_name="seed",
        tooltip="The seed this run used (the queued prompt's value); connect it to Save pack.",
    )


def parameters_output() -> io.Output:
    return io.String.Output(
        display_name="parameters",
        tooltip="Generation parameters text (A1111 style) of what this node ran; connect it to "
        "Save pack.",
    )


def described(spec: PipelineSpec, runs: frozenset[str]) -> PipelineSpec:
    """``spec`` with the stages outside ``runs`` switched off, so its parameters text says
    only what the node did."""
    off = {
        stage: replace(getattr(spec, stage), enabled=False)
        for stage in SWITCHED
        if stage not in runs and getattr(spec, stage).enabled
    }
    return replace(spec, **off)


class _Macro(io.ComfyNode):
    """Shared schema and execution; subclasses set the class variables below."""

    NODE: ClassVar[str] = ""
    DISPLAY: ClassVar[str] = ""
    DESCRIPTION_TEXT: ClassVar[str] = ""
    SETTINGS: ClassVar[tuple[str, ...]] = ()
    USES_CHARACTER: ClassVar[bool] = True
    IMAGE_TIP: ClassVar[str | None] = None  # set when the node takes an upstream image
    OUTPUT_TIP: ClassVar[str] = ""

    @classmethod
    def samples(cls) -> bool:
        """Whether the node samples (has a seed): it then outputs seed and parameters too."""
        return "seed" in cls.SETTINGS

    @classmethod
    def runs(cls) -> frozenset[str]:
        """The stages the node may run: those it has a switch for (the whole pipeline: all)."""
        return frozenset(cls.SETTINGS)

    @classmethod
    def build(cls, spec: PipelineSpec, *, image: Any, prefix: str) -> Built:
        raise NotImplementedError

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs: list[io.Input] = []
        if cls.USES_CHARACTER:
            inputs.append(character_input())
        if cls.IMAGE_TIP is not None:
            inputs.append(image_input(cls.IMAGE_TIP))
        if cls.USES_CHARACTER:
            inputs.extend(prompt_inputs())
        inputs.extend(setting(name) for name in cls.SETTINGS)
        return io.Schema(
            node_id=cls.NODE,
            display_name=cls.DISPLAY,
            category="charpack/pipeline",
            description=cls.DESCRIPTION_TEXT,
            inputs=inputs,
            outputs=[
                image_output(cls.OUTPUT_TIP),
                *((seed_output(), parameters_output()) if cls.samples() else ()),
            ],
            hidden=[io.Hidden.unique_id],
            enable_expand=True,
        )

    @classmethod
    def execute(cls, **values: Any) -> io.NodeOutput:
        character = values.pop("character", None)
        if cls.USES_CHARACTER and not isinstance(character, CharacterSpec):
            raise ValueError(
                f"{cls.NODE}: the character input must come from a Character (charpack) node"
            )
        image = values.pop("image", None)
        spec = spec_or_error(cls.NODE, character=character, **values)
        unique_id = cls.hidden.unique_id if cls.hidden is not None else None

        def build(prefix: str) -> Built:
            return cls.build(spec, image=image, prefix=prefix)

        out = expand(cls.NODE, unique_id, build)
        if not cls.samples():
            return out
        text = parameters_text(described(spec, cls.runs()))
        return io.NodeOutput(*out.args, spec.sampler.seed, text, expand=out.expand)


class CharpackPipeline(_Macro):
    NODE = "CharpackPipeline"
    DISPLAY = "Pipeline (charpack)"
    DESCRIPTION_TEXT = (
        "The whole tested pipeline with its presets: SDXL + character LoRA 0.7 + FaceID, "
        "CFG 4.0 at 832x1216, InstantID face fix 0.85, FaceDetailer 0.4, 4x upscale. Expands "
        "into the same graph the charpack orchestrator sends."
    )
    SETTINGS = (
        "seed", "steps", "cfg", "sampler_name", "scheduler", "width", "height",
        C.STAGE_FACEID, "faceid_weight",
        C.STAGE_INSTANTID, "instantid_weight", "instantid_mode",
        C.STAGE_FACE_DETAILER, "detailer_denoise",
        C.STAGE_UPSCALE, "upscale_model", "output_scale",
        C.STAGE_PAG, "pag_scale",
    )  # fmt: skip
    OUTPUT_TIP = "The finished image (3328x4864 with the presets)."

    @classmethod
    def build(cls, spec: PipelineSpec, *, image: Any, prefix: str) -> Built:
        return build_pipeline(spec, prefix=prefix, outputs=False)


class _Stage(_Macro):
    STAGE: ClassVar[str] = ""

    @classmethod
    def runs(cls) -> frozenset[str]:
        return frozenset({cls.STAGE, *cls.SETTINGS})

    @classmethod
    def build(cls, spec: PipelineSpec, *, image: Any, prefix: str) -> Built:
        return _build_stage(cls.STAGE, spec, image=image, prefix=prefix, outputs=False)


class CharpackBase(_Stage):
    NODE = "CharpackBase"
    DISPLAY = "Base generation with FaceID (charpack)"
    DESCRIPTION_TEXT = (
        "Base generation: checkpoint + character LoRA, one IP-Adapter FaceID Plus V2, "
        "KSampler at CFG 4.0, 832x1216 (optional PAG)."
    )
    STAGE = C.STAGE_BASE
    SETTINGS = (
        "seed", "steps", "cfg", "sampler_name", "scheduler", "width", "height",
        C.STAGE_FACEID, "faceid_weight", C.STAGE_PAG, "pag_scale",
    )  # fmt: skip
    OUTPUT_TIP = "The generated image (832x1216 with the presets)."


class CharpackInstantIDFix(_Stage):
    NODE = "CharpackInstantIDFix"
    DISPLAY = "InstantID face fix (charpack)"
    DESCRIPTION_TEXT = (
        "InstantID as a post-fix at weight 0.85 on a generated image's face, keyed to that "
        "face (never re-posed to the reference)."
    )
    STAGE = C.STAGE_INSTANTID
    SETTINGS = (*SAMPLING, "instantid_weight", "instantid_mode", "instantid_steps")
    IMAGE_TIP = "The generated image whose face is fixed."
    OUTPUT_TIP = "The image with the face fixed; the body is left alone in detailer mode."


class CharpackFaceDetailer(_Stage):
    NODE = "CharpackFaceDetailer"
    DISPLAY = "Face detailer (charpack)"
    DESCRIPTION_TEXT = (
        "FaceDetailer at denoise 0.4 with face_yolov8m detection and SAM masks, using the "
        "FaceID-patched model so the likeness is kept."
    )
    STAGE = C.STAGE_FACE_DETAILER
    SETTINGS = (*SAMPLING, C.STAGE_FACEID, "faceid_weight", "detailer_denoise", "detailer_steps")
    IMAGE_TIP = "The image whose face gets more detail."
    OUTPUT_TIP = "The image with a detailed face."


class CharpackUpscale(_Stage):
    NODE = "CharpackUpscale"
    DISPLAY = "Upscale 4x (charpack)"
    DESCRIPTION_TEXT = (
        "4x upscale with an upscale model (4x-UltraSharp preset) through the core upscale "
        "nodes, optionally resized down after."
    )
    STAGE = C.STAGE_UPSCALE
    SETTINGS = ("upscale_model", "output_scale")
    USES_CHARACTER = False
    IMAGE_TIP = "The image to upscale (generate small, refine, then upscale)."
    OUTPUT_TIP = "The upscaled image (4x, times output_scale)."


MACROS: tuple[type[_Macro], ...] = (
    CharpackPipeline,
    CharpackBase,
    CharpackInstantIDFix,
    CharpackFaceDetailer,
    CharpackUpscale,
)
