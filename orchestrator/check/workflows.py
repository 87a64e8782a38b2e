"""Generated workflows, never edited by hand: ``workflows/api/``, ``workflows/ui/`` and the node
pack's ``example_workflows/``.

``workflows/api/full.json`` is the whole pipeline with the presets; one file per stage preset
(``stage-<name>.json``) runs that stage alone on ``input.png``. ``workflows/ui/`` holds the same
graphs as UI workflows (the editor's format, :mod:`.ui_workflows`); ``example_workflows/`` holds
UI workflows of charpack's own nodes (:mod:`.node_examples`). :func:`check` reports drift
between the committed files and what the code generates now.
"""

from __future__ import annotations

import json
from pathlib import Path

from charpack.comfy.objectinfo import ObjectInfo
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack
from charpack_nodes.pipelines import (
    STAGES,
    CharacterSpec,
    OutputSpec,
    PipelineSpec,
    build_pipeline,
    build_stage,
    evolve,
    to_json,
)

from . import node_examples, ui_workflows

REPO = Path(__file__).resolve().parents[2]
IDENTITY_TEST = REPO / "examples" / "identity-test.yaml"
API_DIR = Path("workflows/api")
UI_DIR = Path("workflows/ui")
EXAMPLES_DIR = Path("custom_nodes/charpack_nodes/example_workflows")

EXAMPLE = PipelineSpec(
    character=CharacterSpec(
        trigger="ava_cp woman",
        face_images=("face.png",),
        attributes=(("hair", "shoulder-length auburn hair"), ("eyes", "green eyes")),
        prompt_prefix="RAW photo",
        prompt_suffix="natural skin texture, 85mm lens",
    ),
    prompt="head and shoulders portrait, cream knit sweater, soft window light",
    output=OutputSpec(pack="example", scene="portrait", name="portrait_001_0"),
)


def generate() -> dict[str, str]:
    """File name -> JSON text for every generated workflow."""
    files = {"full.json": to_json(build_pipeline(EXAMPLE).graph.finalize())}
    for stage in STAGES:
        spec = evolve(EXAMPLE, output=evolve(EXAMPLE.output, scene=f"stage-{stage}"))
        files[f"stage-{stage}.json"] = to_json(build_stage(stage, spec).graph.finalize())
    return files


def generate_ui(api: dict[str, str], info: ObjectInfo) -> dict[str, str]:
    """The UI workflow of each API workflow, under the same file name."""
    return {
        name: ui_workflows.to_ui_json(json.loads(text), info, name=f"workflows/ui/{name}")
        for name, text in api.items()
    }


def identity_test_specs() -> dict[str, PipelineSpec]:
    """Scene -> the spec of its first job in ``examples/identity-test.yaml``.

    The scenes, seeds and pack name are the test's; the character is :data:`EXAMPLE`'s, the
    one every example workflow uses (its face is ``face.png``, not the pack's own files), so a
    user sets up one Character for all of them.
    """
    specs: dict[str, PipelineSpec] = {}
    for job in expand(load_pack(IDENTITY_TEST)):
        specs.setdefault(job.scene, evolve(job.spec, character=EXAMPLE.character))
    return specs


def generate_examples(info: ObjectInfo) -> dict[str, str]:
    """The node pack's example workflows (UI format): file name -> JSON text."""
    graphs = {"whole-pipeline.json": node_examples.whole_pipeline(EXAMPLE, info)}
    for stage in node_examples.STAGE_NODES:
        graphs[f"stage-{stage}.json"] = node_examples.stage_alone(stage, EXAMPLE, info)
    graphs["identity-test-5-shot.json"] = node_examples.identity_test(identity_test_specs(), info)
    return {
        name: ui_workflows.to_ui_json(graph, info, name=f"example_workflows/{name}")
        for name, graph in graphs.items()
    }


def generate_all(
    api_dir: Path = API_DIR, ui_dir: Path = UI_DIR, examples_dir: Path = EXAMPLES_DIR
) -> dict[Path, dict[str, str]]:
    """Directory -> its generated files (name -> text)."""
    info = ObjectInfo.recorded()
    api = generate()
    return {api_dir: api, ui_dir: generate_ui(api, info), examples_dir: generate_examples(info)}


def export(directory: Path, files: dict[str, str] | None = None) -> list[Path]:
    """Write every generated workflow into ``directory``; remove stale generated files."""
    directory.mkdir(parents=True, exist_ok=True)
    files = generate() if files is None else files
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
            written.append(stale)
    return written


def check(directory: Path, files: dict[str, str] | None = None) -> list[str]:
    """Problems (drifted, missing or stale files); empty when the files match the code."""
    files = generate() if files is None else files
    problems = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from what charpack generates")
    for path in sorted(directory.glob("*.json")):
        if path.name not in files:
            problems.append(f"{path}: not generated by charpack (stale)")
    return problems
