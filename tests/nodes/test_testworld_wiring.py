"""The nodes tier runs inside the ComfyUI test environment: ComfyUI itself is importable on CPU.

Collected only by the inner session that ``tests/server/test_nodes_tier.py`` starts with the
ComfyUI venv's Python (``CHARPACK_NODES_TIER=1``), never by the project's own session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_comfyui_v3_node_api_imports() -> None:
    import torch
    from comfy_api.latest import ComfyExtension, io

    assert issubclass(io.ComfyNode, object) and hasattr(io, "Schema")
    assert ComfyExtension.__name__ == "ComfyExtension"
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
    for pack in ("buffalo_l", "antelopev2"):
        assert sorted(p.suffix for p in (insightface_root / "models" / pack).iterdir()) == [
            ".onnx",
            ".onnx",
        ]
