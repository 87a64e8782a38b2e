"""The identity gate passes images at or above its threshold and blocks the rest of the branch
otherwise (ComfyUI's silent ExecutionBlocker), from a score or by scoring against a Character."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from charpack_nodes.nodes_gate import THRESHOLD, CharpackIdentityGate
from charpack_nodes.ops import specs
from charpack_nodes.pipelines.scene import IDENTITY_THRESHOLD
from tests.comfy.standins import faces
from tests.nodes.helpers import ComfyDirs, call_node, face_picture, stranger, to_tensor

REPO = Path(__file__).resolve().parents[2]


def gate(images: object, threshold: float = THRESHOLD, **inputs: object) -> object:
    return call_node(CharpackIdentityGate, images=images, threshold=threshold, **inputs)


def blocked(out: object) -> bool:
    from comfy_execution.graph_utils import ExecutionBlocker

    (value,) = out.args  # type: ignore[attr-defined]
    return isinstance(value, ExecutionBlocker) and value.message is None


def test_the_threshold_preset_is_the_pack_files_identity_threshold() -> None:
    # The orchestrator's IdentityModel.threshold names the same constant (one value for both).
    tree = ast.parse((REPO / "orchestrator" / "pack" / "model.py").read_text(encoding="utf-8"))
    (model,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "IdentityModel"]
    (field,) = [
        n for n in model.body if isinstance(n, ast.AnnAssign) and n.target.id == "threshold"
    ]
    assert isinstance(field.value, ast.Name) and field.value.id == "IDENTITY_THRESHOLD"
    assert THRESHOLD == IDENTITY_THRESHOLD
    info = CharpackIdentityGate.GET_NODE_INFO_V1()
    assert info["input"]["required"]["threshold"][1]["default"] == IDENTITY_THRESHOLD


def test_a_score_at_the_threshold_passes_the_images_unchanged() -> None:
    images = to_tensor(face_picture())
    out = gate(images, 0.5, score=0.5)
    assert out.args[0] is images
    assert out.ui == {
        "passed": [True], "threshold": [0.5], "text": ["passed: 0.500 >= threshold 0.500"],
    }  # fmt: skip


def test_a_score_below_the_threshold_blocks_the_branch_silently_and_says_so() -> None:
    out = gate(to_tensor(face_picture()), 0.5, score=0.49)
    assert blocked(out), "a silent block: the branch stops, the prompt does not fail"
    assert out.ui["passed"] == [False]
    assert out.ui["text"] == [
        "blocked: 0.490 below threshold 0.500; the rest of this branch does not run"
    ]


def test_with_a_character_each_image_passes_on_its_own(comfy_dirs: ComfyDirs) -> None:
    face_picture().save(comfy_dirs.input / "ava.png")
    character = specs.character_spec(
        ckpt_name="c", lora_name="None", lora_strength=0.7, trigger="", face_image="ava.png"
    )
    images = to_tensor(
        face_picture(stranger(5)), face_picture(faces.AVA.turned(0.2)), faces.landscape((256, 256))
    )
    out = gate(images, 0.8, character=character)
    assert out.ui["passed"] == [False, True, False]
    assert out.args[0].shape[0] == 1
    assert (out.args[0][0] == images[1]).all(), "only the on-identity image goes on"
    assert out.ui["text"][0].startswith("passed 1 of 3 images: ")
    assert out.ui["text"][0].endswith(", no face at threshold 0.800")
    assert blocked(gate(images[[0, 2]], 0.8, character=character))


def test_without_score_or_character_the_error_names_both_inputs() -> None:
    with pytest.raises(ValueError) as caught:
        gate(to_tensor(face_picture()))
    assert str(caught.value) == (
        "CharpackIdentityGate: nothing to gate on: connect input 'score' (from an Identity "
        "score node) or input 'character' (a Character node)"
    )
