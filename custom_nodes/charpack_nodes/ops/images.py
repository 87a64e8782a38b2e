"""IMAGE tensors (ComfyUI's ``[B, H, W, C]`` floats in 0..1) to 8-bit pixel arrays.

One conversion for every node that needs 8-bit pixels (the saver, the identity score), written
as core ``SaveImage`` does it (scale by 255, clip, truncate) so a charpack file and a core file
of the same tensor hold the same pixels. Torch is imported only when a tensor arrives.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_uint8(image: Any) -> np.ndarray:
    """One image (``[H, W, C]``, torch tensor or numpy array, floats 0..1) as contiguous uint8."""
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            return np.ascontiguousarray(image)
        return np.clip(255.0 * image, 0, 255).astype(np.uint8)
    import torch

    with torch.no_grad():
        # torch spreads this over all cores; numpy would use one.
        out = image.detach().mul(255).clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(out.cpu().numpy())


def rgb_uint8(image: Any) -> np.ndarray:
    """``to_uint8`` reduced to three colour channels (grey is repeated, alpha dropped)."""
    pixels = to_uint8(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    return np.ascontiguousarray(pixels[:, :, :3])
