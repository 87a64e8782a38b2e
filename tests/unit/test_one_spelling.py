"""One spelling per name: every node id, node type, loader model folder and stage name is written
as a string literal in exactly one production module; everything else imports it.

The names are taken from the code itself (the ids the stage builders emit for a spread of specs
that switches every optional node on, the catalogue's node types and folders, the stages), and
``orchestrator/**`` and ``custom_nodes/charpack_nodes/**`` are read with :mod:`ast`, so a module
that re-spells ``"score.run"`` or ``"face_detailer"`` instead of importing it fails here.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from charpack.pack.settings import STAGE_TYPES
from charpack_nodes.pipelines import STAGES, PipelineSpec, build_pipeline, build_stage, catalog
from charpack_nodes.pipelines import params as P

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = (ROOT / "orchestrator", ROOT / "custom_nodes" / "charpack_nodes")

# Specs that between them emit every node the builders can emit.
SPECS = (
    PipelineSpec(),
    PipelineSpec(
        pag=P.PAGSpec(enabled=True),
        pose=P.PoseSpec(image="pose.png"),
        img2img=P.Img2ImgSpec(image="init.png"),
        instantid=P.InstantIDSpec(mode="img2img"),
        upscale=P.UpscaleSpec(output_scale=0.5),
        character=P.CharacterSpec(face_images=("a.png", "b.png", "c.png")),
    ),
    PipelineSpec(output=P.OutputSpec(save="image")),
    PipelineSpec(output=P.OutputSpec(save="preview")),
)


# The same word naming something else, outside charpack: (name, module) -> what it is there.
HOMONYMS = {
    ("detection", "custom_nodes/charpack_nodes/ops/identity.py"): "an InsightFace module name",
    # Field paths that a range error names (the pack file's pose.image, upscale.model).
    ("pose.image", "custom_nodes/charpack_nodes/pipelines/scene.py"): "PoseSpec.image's path",
    ("upscale.model", "custom_nodes/charpack_nodes/pipelines/params.py"): "a field path",
}


def node_ids() -> set[str]:
    ids: set[str] = set()
    for spec in SPECS:
        ids |= {node.id for node in build_pipeline(spec).graph}
        for stage in STAGES:
            ids |= {node.id for node in build_stage(stage, spec).graph}
    # The n-th face reference is f"ref.face{n}": its literal is the stem.
    return {re.sub(r"\d+$", "", node_id) for node_id in ids}


def vocabulary() -> dict[str, str]:
    """name -> what kind of name it is."""
    names: dict[str, str] = {}
    names |= {folder: "loader model folder" for folder in catalog.LOADER_FOLDERS.values()}
    names |= {loader: "node type" for loader, _input in catalog.LOADER_FOLDERS}
    names |= {spec.class_type: "node type" for spec in catalog.ALL}
    names |= {stage: "stage name" for stage in (*STAGES, *STAGE_TYPES)}
    names |= {node_id: "node id" for node_id in node_ids()}
    return names


def literals() -> dict[str, dict[str, list[int]]]:
    """string literal -> module -> lines, over every production module."""
    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for root in PRODUCTION:
        for path in sorted(root.rglob("*.py")):
            module = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found[node.value][module].append(node.lineno)
    return found


def test_the_vocabulary_covers_what_the_builders_emit() -> None:
    names = vocabulary()
    # A spot check that the spread of specs really switches the optional nodes on.
    for node_id in ("score.run", "base.ckpt", "pose.canny", "init.encode", "ref.face"):
        assert names[node_id] == "node id"
    assert {"face_detailer", "instantid", "detection"} <= {
        n for n, kind in names.items() if kind == "stage name"
    }
    assert names["upscale_models"] == "loader model folder"


def test_every_name_is_spelled_in_exactly_one_production_module() -> None:
    found = literals()
    spelled_twice = []
    missing = []
    for name, kind in sorted(vocabulary().items()):
        modules = {m: ls for m, ls in found.get(name, {}).items() if (name, m) not in HOMONYMS}
        if not modules:
            missing.append(f"{kind} {name!r}")
        elif len(modules) > 1:
            where = ", ".join(f"{m}:{','.join(map(str, ls))}" for m, ls in sorted(modules.items()))
            spelled_twice.append(f"{kind} {name!r} in {where}")
    assert not missing, "names no production module spells:\n" + "\n".join(missing)
    assert not spelled_twice, (
        "names spelled in more than one production module (import the owner's constant):\n"
        + "\n".join(spelled_twice)
    )


@pytest.mark.parametrize("node_id", ["score.run", "base.ckpt", "detail.run", "save.run"])
def test_node_ids_are_spelled_by_the_builder_that_emits_them(node_id: str) -> None:
    modules = set(literals()[node_id])
    assert len(modules) == 1
    assert modules <= {
        f"custom_nodes/charpack_nodes/pipelines/{name}.py"
        for name in ("models", "base", "face", "finish", "stages")
    }
