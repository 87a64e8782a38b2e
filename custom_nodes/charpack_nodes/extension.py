"""The ComfyExtension that lists charpack's nodes (imported only by ``comfy_entrypoint``)."""

from __future__ import annotations

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


class CharpackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
