"""The nodes tier runs inside the ComfyUI test environment: ComfyUI itself is importable on CPU.

Collected only by the inner session that ``tests/server/test_nodes_tier.py`` starts with the
ComfyUI venv's Python (``CHARPACK_NODES_TIER=1``), never by the project's own session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_v3_node_declares_its_schema_and_runs_on_the_cpu() -> None:
    # What the node pack relies on from this environment, exercised rather than imported: a V3
    # node's schema becomes the V1 info ComfyUI serves, and ComfyUI's own execution entry
    # (EXECUTE_NORMALIZED) runs it on a CPU-only torch 2.13.
    import torch
    from comfy_api.latest import io

    class AddOne(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="WiringAddOne",
                category="tests",
                inputs=[io.Float.Input("x", default=0.5, min=0.0, max=4.0)],
                outputs=[io.Float.Output()],
            )

        @classmethod
        def execute(cls, x: float) -> io.NodeOutput:
            return io.NodeOutput(float(torch.tensor([x]).add(1.0).item()))

    info = AddOne.GET_NODE_INFO_V1()
    assert info["name"] == "WiringAddOne" and info["output"] == ["FLOAT"]
    kind, options = info["input"]["required"]["x"]
    assert kind == "FLOAT" and (options["min"], options["max"], options["default"]) == (0, 4, 0.5)
    assert AddOne.EXECUTE_NORMALIZED(x=1.5).result == (2.5,)
    assert torch.__version__.startswith("2.13.0") and not torch.cuda.is_available()


def test_pipelines_import_without_torch() -> None:
    # The single source of truth must stay standard-library only: a fresh interpreter that
    # imports it must not have pulled torch (or ComfyUI) in.
    code = (
        "import sys, charpack_nodes.pipelines; "
        "loaded = {'torch', 'comfy', 'folder_paths'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tiny_insightface_packs_are_in_place(insightface_root: Path) -> None:
    # Each pack InsightFace loads by name holds its two ONNX models (detector, recognizer) and
    # each is a real ONNX file (protobuf ModelProto: field 1, ir_version, as its first byte).
    for pack in ("buffalo_l", "antelopev2"):
        models = sorted((insightface_root / "models" / pack).iterdir())
        assert [p.suffix for p in models] == [".onnx", ".onnx"], pack
        for model in models:
            assert model.read_bytes()[:1] == b"\x08", f"{model} is not an ONNX model"
