"""charpack's ComfyUI node pack: registration only.

Nothing here imports ComfyUI at module level, so ``import charpack_nodes`` works outside ComfyUI
(the orchestrator imports ``charpack_nodes.pipelines``, which is standard library only).
"""
