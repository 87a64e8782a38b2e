"""charpack's ComfyUI node pack: registration, and the version it is.

ComfyUI's loader calls :func:`comfy_entrypoint`; only then are the node modules (and through
them ComfyUI, torch and InsightFace) imported. Nothing here imports ComfyUI at module level, so
``import charpack_nodes`` works outside ComfyUI (the orchestrator imports
``charpack_nodes.pipelines``, which is standard library only). Registered once, as a V3
extension; no ``NODE_CLASS_MAPPINGS``.

The version: ``__version__`` (kept equal to both pyproject.toml files by a unit test) and, when
the pack is loaded from a git checkout of charpack, that checkout's commit. Inside ComfyUI the
extension serves both at ``GET /charpack/version``, so ``charpack preflight`` can refuse a
server whose nodes are not the client's version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["WEB_DIRECTORY", "__version__", "checkout_commit", "comfy_entrypoint", "version_info"]

__version__ = "0.1.0"

# The graph editor's side of the nodes (served at /extensions/charpack_nodes/): an upload button
# for every face image input, and the identity score and gate results shown on their nodes.
WEB_DIRECTORY = "./web"


def checkout_commit(root: Path) -> str | None:
    """The HEAD commit of the charpack checkout at ``root`` (None when it is not one).

    Only a folder that holds charpack's own tree counts: a node pack copied into
    ``ComfyUI/custom_nodes/`` must not report ComfyUI's commit as its own.
    """
    tree = (root / "custom_nodes" / "charpack_nodes").is_dir() and (root / "orchestrator").is_dir()
    if not (tree and (root / ".git").exists()):
        return None
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    ok = proc.returncode == 0 and len(commit) == 40
    return commit if ok and all(c in "0123456789abcdef" for c in commit) else None


def version_info() -> dict[str, str | None]:
    """``{"name", "version", "commit"}`` of this node pack as loaded (the link resolved)."""
    root = Path(__file__).resolve().parent.parent.parent
    return {"name": "charpack", "version": __version__, "commit": checkout_commit(root)}


async def comfy_entrypoint() -> Any:
    """The ComfyExtension listing charpack's nodes (called by ComfyUI's custom-node loader)."""
    from .extension import CharpackExtension

    return CharpackExtension()
