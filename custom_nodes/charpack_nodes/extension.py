"""The ComfyExtension that lists charpack's nodes (imported only by ``comfy_entrypoint``)."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from .nodes_character import CharpackCharacter
from .nodes_identity import CharpackIdentityScore
from .nodes_pipeline import MACROS
from .nodes_save import CharpackSavePack

NODES: tuple[type[io.ComfyNode], ...] = (
    CharpackCharacter,
    *MACROS,
    CharpackIdentityScore,
    CharpackSavePack,
)


def _register_insightface_folder() -> None:
    """List ``models/insightface`` in ``GET /models/insightface``, so ``charpack preflight`` can
    check the identity score's model packs; the cubiq packs read the same hard-coded folder."""
    if "insightface" not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, "insightface")
        folder_paths.folder_names_and_paths["insightface"] = ([path], {".onnx"})


class CharpackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls on_load(); get_node_list() runs once, at load.
        _register_insightface_folder()
        return list(NODES)
