"""Registration of the stand-in pack inside the test server (imported by ComfyUI only).

Third-party stand-ins register like any node pack (``NODE_CLASS_MAPPINGS``). Core names cannot:
ComfyUI skips pack entries whose names the core already has. So the model-bound core classes are
swapped in ComfyUI's own ``nodes.NODE_CLASS_MAPPINGS`` here, explicitly, and only when the test
launcher set ``CHARPACK_STANDINS=1``; each stand-in subclasses the real class and overrides only its
execution method, so everything a client sees (``/object_info``, validation, ``python_module``)
is the real node's. Nothing in the ComfyUI tree is modified.
"""

from __future__ import annotations

import logging
import os

import nodes

from . import core_nodes, impact_nodes, instantid_nodes, ipadapter_nodes

log = logging.getLogger(__name__)

ENABLED = os.environ.get("CHARPACK_STANDINS") == "1"
PACKS = (ipadapter_nodes, instantid_nodes, impact_nodes)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def install() -> None:
    """Register the folders, swap the core classes and fill the mappings (once)."""
    for pack in PACKS:
        pack.register_folders()
        NODE_CLASS_MAPPINGS.update(pack.NODES)
        NODE_DISPLAY_NAME_MAPPINGS.update(pack.DISPLAY_NAMES)
    for name, standin in core_nodes.CORE_STANDINS.items():
        real = nodes.NODE_CLASS_MAPPINGS.get(name)
        if real is None or not issubclass(standin, real):
            raise RuntimeError(f"stand-in for core node {name} does not extend the real class")
        nodes.NODE_CLASS_MAPPINGS[name] = standin
    log.info(
        "charpack test stand-ins: %d core nodes swapped (%s), %d pack nodes registered",
        len(core_nodes.CORE_STANDINS),
        ", ".join(core_nodes.CORE_STANDINS),
        len(NODE_CLASS_MAPPINGS),
    )


if ENABLED:
    install()
else:
    log.warning(
        "charpack test stand-ins are loaded but inactive: they swap model-bound nodes for "
        "weightless ones and run only in the test server (CHARPACK_STANDINS=1)"
    )
