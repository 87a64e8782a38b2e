"""charpack's ComfyUI node pack: registration only.

ComfyUI's loader calls :func:`comfy_entrypoint`; only then are the node modules (and through
them ComfyUI, torch and InsightFace) imported. Nothing here imports ComfyUI at module level, so
``import charpack_nodes`` works outside ComfyUI (the orchestrator imports
``charpack_nodes.pipelines``, which is standard library only). Registered once, as a V3
extension; no ``NODE_CLASS_MAPPINGS``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["comfy_entrypoint"]


async def comfy_entrypoint() -> Any:
    """The ComfyExtension listing charpack's nodes (called by ComfyUI's custom-node loader)."""
    from .extension import CharpackExtension

    return CharpackExtension()
