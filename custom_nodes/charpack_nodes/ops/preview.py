"""Editor previews of saved pack images: small, complete, written before the node returns.

Why: the pack files are written by the background writer (``saving.py``) after the node has
returned, so a graph editor that fetched them from the node's UI output could get a 404, or the
earlier file under an overwritten name, for a moment. The editor is shown a preview instead: the
image scaled so its long side is at most :data:`MAX_SIDE` pixels (an integer box reduction,
then bilinear), PNG-encoded at level 1 (``png.encode_png``) and written atomically (temporary
name, rename: ``saving.atomic_write``) on the execution thread. For a 3328x4864 image this
costs about 60 ms of CPU on top of the 8-bit conversion the saver needs anyway (numbers in
``nodes_save.py``). No metadata: the pack file is the one that keeps the workflow.
Bounded: only the newest :data:`MAX_KEPT` previews stay (a pack run of thousands of images
would otherwise fill the pod's disk with temp files ComfyUI clears only at start-up); the
editor fetches a preview as soon as its node has run, long before it is among the oldest.
Pillow and numpy only; no ComfyUI, no torch.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .paths import PackPaths
from .png import encode_png
from .saving import atomic_write

MAX_SIDE = 1024
PREVIEW_LEVEL = 1
MAX_KEPT = 256  # previews kept under temp/charpack/: ~1.4 MB each for a photograph, ~360 MB


def downscale(pixels: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``pixels`` (uint8 ``[H, W, C]``) with the long side at most ``max_side``, aspect kept."""
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels
    size = (max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest)))
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    factor = longest // max_side
    if factor >= 2:  # a box reduction first: fast, and no aliasing from skipped pixels
        picture = picture.reduce(factor)
    small = np.asarray(picture.resize(size, Image.Resampling.BILINEAR))
    return small[:, :, None] if small.ndim == 2 else small


def write_preview(pixels: np.ndarray, target: PackPaths, *, root: str) -> None:
    """Write the preview of ``pixels`` to ``target.png``, whole or not at all, then remove the
    oldest previews under ``root`` beyond :data:`MAX_KEPT`."""
    data = encode_png(np.ascontiguousarray(downscale(pixels)), compress_level=PREVIEW_LEVEL)
    os.makedirs(target.folder, exist_ok=True)
    atomic_write(target.png, data)
    prune(root, keep=MAX_KEPT)


def prune(root: str, *, keep: int) -> None:
    """Remove all but the ``keep`` newest ``.png`` files under ``root`` (others' files and
    temporary ``.part`` files are left alone; a file another saver removed first is skipped)."""
    found: list[tuple[int, str]] = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".png") and not name.startswith("."):
                path = os.path.join(folder, name)
                try:
                    found.append((os.stat(path).st_mtime_ns, path))
                except FileNotFoundError:
                    continue
    if len(found) <= keep:
        return
    found.sort()
    for _mtime, path in found[: len(found) - keep]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
