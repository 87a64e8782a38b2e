"""The ComfyExtension that lists charpack's nodes (imported only by ``comfy_entrypoint``), and
the ``GET /charpack/version`` route that tells clients which charpack these nodes are."""

from __future__ import annotations

import os
import sys
from typing import Any

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import version_info
from .nodes_character import CharpackCharacter
from .nodes_gate import CharpackIdentityGate
from .nodes_identity import CharpackIdentityScore
from .nodes_pipeline import MACROS
from .nodes_save import CharpackSavePack
from .nodes_train import CharpackFaceCheck, CharpackSaveTrainedLoRA
from .pipelines import catalog

NODES: tuple[type[io.ComfyNode], ...] = (
    CharpackCharacter,
    *MACROS,
    CharpackIdentityScore,
    CharpackIdentityGate,
    CharpackSavePack,
    CharpackSaveTrainedLoRA,
    CharpackFaceCheck,
)


def _register_insightface_folder() -> None:
    """List ``models/insightface`` in ``GET /models/insightface``, so ``charpack preflight`` can
    check the identity score's model packs; the cubiq packs read the same hard-coded folder."""
    folder = catalog.FOLDER_INSIGHTFACE
    if folder not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, folder)
        folder_paths.folder_names_and_paths[folder] = ([path], {".onnx"})


_VERSION_ROUTE: dict[str, Any] = {}


def _register_version_route() -> None:
    """``GET /charpack/version`` -> ``{"name", "version", "commit"}`` as loaded, for
    ``charpack preflight`` (a route, so /object_info stays as the nodes define it). Only when a
    ComfyUI server is running: ComfyUI adds its route table after loading the node packs."""
    server = sys.modules.get("server")  # ComfyUI's own module, imported by its main.py
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None or _VERSION_ROUTE:
        return
    from aiohttp import web

    _VERSION_ROUTE.update(version_info())  # measured once: the code that was loaded

    @instance.routes.get("/charpack/version")
    async def charpack_version(request: web.Request) -> web.Response:
        return web.json_response(_VERSION_ROUTE)


class CharpackExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls on_load(); get_node_list() runs once, at load.
        _register_insightface_folder()
        _register_version_route()
        return list(NODES)
