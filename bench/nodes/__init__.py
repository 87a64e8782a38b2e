"""charpack's bench-only ComfyUI node pack: registration only (see ``nodes_bench.py``).

Loaded by the benchmark's servers from ``custom_nodes/charpack_bench`` (a link to this folder),
next to the test world's packs; never installed on a pod. Nothing imports ComfyUI until the
loader calls :func:`comfy_entrypoint`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["comfy_entrypoint"]


async def comfy_entrypoint() -> Any:
    """The ComfyExtension listing the bench node (called by ComfyUI's custom-node loader)."""
    from .nodes_bench import BenchExtension

    return BenchExtension()
