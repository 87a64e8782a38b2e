"""Weightless stand-ins for the model-bound node types, as a ComfyUI node pack (test server only).

The test launcher links this folder into the server's ``custom_nodes/`` as ``charpack_standins``.
The node mappings are built on first access (PEP 562), so this package, and the Pillow-only face
renderer in ``faces.py``, import without ComfyUI (the examples script and the project's tests use
the renderer). How the core classes are swapped: ``registry.py``; the objects that flow between
stand-ins: ``objects.py``; what the sampler "generates": ``render.py``.
"""

from __future__ import annotations

from typing import Any

_LAZY = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(name)
