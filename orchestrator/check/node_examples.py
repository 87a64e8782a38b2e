"""API graphs of charpack's own nodes: the node pack's ``example_workflows/``.

The editor's templates browser lists the UI workflows in a node pack's ``example_workflows/``;
:mod:`.workflows` converts these graphs with :mod:`.ui_workflows`. There are three kinds: the
whole pipeline (Character -> Pipeline -> Identity score -> Save pack), each stage's macro alone,
and the 5-shot identity test of ``examples/identity-test.yaml`` (one Pipeline per scene).

The graphs follow the recorded schema (``object_info/charpack.json``), whatever version it is:
every widget (optional ones too, as the editor sends them) starts at its recorded default and
takes the spec's value where the node has that input; Identity score takes its faces from the
Character node when it has a ``character`` input (else from a LoadImage of the first face);
Save pack takes ``seed`` and ``parameters`` from the macro's outputs of those names when it has
them; otherwise (Upscale has none: its image was made elsewhere) they keep the saver's defaults.
Face images are named by their file name, as a user uploads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from charpack.comfy.objectinfo import ObjectInfo
from charpack_nodes.ops.specs import NONE_CHOICE, SETTINGS
from charpack_nodes.pipelines import PipelineSpec, catalog, evolve

from .ui_workflows import default_of, ordered_inputs

CHARACTER = "CharpackCharacter"
PIPELINE = "CharpackPipeline"
# Each stage's macro node, by the stage it runs alone.
STAGE_NODES = {
    catalog.STAGE_BASE: "CharpackBase",
    catalog.STAGE_INSTANTID: "CharpackInstantIDFix",
    catalog.STAGE_FACE_DETAILER: "CharpackFaceDetailer",
    catalog.STAGE_UPSCALE: "CharpackUpscale",
}
SCORE = catalog.IDENTITY_SCORE.class_type
SAVE = catalog.SAVE_PACK.class_type
LOAD_IMAGE = catalog.LOAD_IMAGE.class_type
STAGE_INPUT = "input.png"  # the picture a stage-alone example starts from (as workflows/api)
PASSED_ON = ("seed", "parameters")  # macro outputs Save pack records, when both have them


class _Graph:
    """An API graph under construction, checked against the schema as it grows."""

    def __init__(self, info: ObjectInfo) -> None:
        self.info = info
        self.nodes: dict[str, dict[str, Any]] = {}

    def has_input(self, class_type: str, name: str) -> bool:
        node = self.info.get(class_type)
        return node is not None and name in node.inputs

    def output(self, node_id: str, name: str) -> list[Any] | None:
        node = self.info.get(self.nodes[node_id]["class_type"])
        assert node is not None
        names = list(node.output_names)
        return [node_id, names.index(name)] if name in names else None

    def add(self, node_id: str, class_type: str, values: Mapping[str, Any]) -> str:
        inputs: dict[str, Any] = {}
        for spec in ordered_inputs(self.info, class_type):
            if spec.name in values and values[spec.name] is not None:
                inputs[spec.name] = values[spec.name]
            elif spec.is_widget:  # the editor sends every widget, optional ones too
                inputs[spec.name] = default_of(spec)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def character_values(spec: PipelineSpec) -> dict[str, Any]:
    c = spec.character
    faces = [Path(f).name for f in c.face_images]
    return {
        "ckpt_name": c.checkpoint,
        "lora_name": c.lora.name if c.lora else NONE_CHOICE,
        "lora_strength": c.lora.strength_model if c.lora else None,
        "trigger": c.trigger,
        "face_image": faces[0],
        "face_image_2": faces[1] if len(faces) > 1 else NONE_CHOICE,
        "attributes": "\n".join(f"{name}: {value}" for name, value in c.attributes),
        "prompt_prefix": c.prompt_prefix,
        "prompt_suffix": c.prompt_suffix,
        "negative": c.negative,
    }


def macro_values(spec: PipelineSpec) -> dict[str, Any]:
    values = {name: getattr(getattr(spec, part), field) for name, (part, field) in SETTINGS.items()}
    return values | {"prompt": spec.prompt, "negative": spec.negative}


def _save(g: _Graph, node_id: str, spec: PipelineSpec, image: list[Any], macro: str | None,
          score: str | None = None) -> None:  # fmt: skip
    values: dict[str, Any] = {
        "images": image,
        "pack": spec.output.pack,
        "scene": spec.output.scene,
        "name": spec.output.name,
        "compress_level": spec.output.compress_level,
    }
    for name in PASSED_ON:  # from the macro that made the image, else the saver's default
        link = g.output(macro, name) if macro else None
        if link is not None and g.has_input(SAVE, name):
            values[name] = link
    if score is not None:
        values["score"] = g.output(score, "score")
    g.add(node_id, SAVE, values)


def _scored(g: _Graph, prefix: str, spec: PipelineSpec, character: str) -> None:
    """Pipeline -> Identity score -> Save pack, under ids ``<prefix>pipeline`` etc."""
    pipeline = g.add(
        f"{prefix}pipeline", PIPELINE, macro_values(spec) | {"character": [character, 0]}
    )
    faces: dict[str, Any] = {"images": g.output(pipeline, "image")}
    if g.has_input(SCORE, "character"):
        faces["character"] = [character, 0]
    else:
        face = g.add("reference", LOAD_IMAGE, {"image": Path(spec.character.face_images[0]).name})
        faces["reference"] = [face, 0]
    score = g.add(f"{prefix}score", SCORE, faces)
    _save(g, f"{prefix}save", spec, g.output(score, "images") or [score, 0], pipeline, score)


def whole_pipeline(spec: PipelineSpec, info: ObjectInfo) -> dict[str, Any]:
    g = _Graph(info)
    character = g.add("character", CHARACTER, character_values(spec))
    _scored(g, "", spec, character)
    return g.nodes


def stage_alone(stage: str, spec: PipelineSpec, info: ObjectInfo) -> dict[str, Any]:
    g = _Graph(info)
    class_type = STAGE_NODES[stage]
    values = macro_values(spec)
    if g.has_input(class_type, "character"):
        values["character"] = [g.add("character", CHARACTER, character_values(spec)), 0]
    if g.has_input(class_type, "image"):
        values["image"] = [g.add("input", LOAD_IMAGE, {"image": STAGE_INPUT}), 0]
    macro = g.add(stage, class_type, values)
    out = evolve(spec, output=evolve(spec.output, scene=f"stage-{stage}"))
    _save(g, "save", out, g.output(macro, "image") or [macro, 0], macro)
    return g.nodes


def identity_test(specs: Mapping[str, PipelineSpec], info: ObjectInfo) -> dict[str, Any]:
    """One Character, then one scored and saved Pipeline per scene (ids ``<scene>.pipeline``)."""
    g = _Graph(info)
    first = next(iter(specs.values()))
    character = g.add("character", CHARACTER, character_values(first))
    for scene, spec in specs.items():
        _scored(g, f"{scene}.", spec, character)
    return g.nodes
