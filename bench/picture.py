"""The bench picture: one photograph-like 3328x4864 PNG of about 29 MB, made once and cached.

A pipeline's final image is a 4x upscale of a photograph: smooth colour fields, mid-frequency
detail and sensor-like noise, which PNG compresses to roughly 60% of its raw 48.6 MB. Flat test
renders compress far better and would make downloads look cheap, so the bench node
(``bench/nodes``) serves this file instead. Deterministic; cached under
``~/.cache/charpack/bench/`` (outside git), keyed on the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

WIDTH, HEIGHT = 3328, 4864
NOISE = 2.5  # sensor-like noise (8-bit levels); sets the PNG size: ~29 MB at level 1
RECIPE = "v1"


def cache_dir() -> Path:
    root = os.environ.get("CHARPACK_TEST_CACHE") or Path.home() / ".cache" / "charpack"
    return Path(root) / "bench"


def bench_picture(*, folder: Path | None = None) -> Path:
    """The path of the bench picture, made on first use (a few seconds of CPU)."""
    path = (folder or cache_dir()) / f"photo-{WIDTH}x{HEIGHT}-{RECIPE}.png"
    if path.is_file():
        return path
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(20261121)
    fields = rng.random((HEIGHT // 64, WIDTH // 64, 3)) * 255
    detail = rng.random((HEIGHT // 8, WIDTH // 8, 3)) * 255
    low = Image.fromarray(fields.astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    mid = Image.fromarray(detail.astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BILINEAR)
    pixels = np.asarray(low, dtype=np.float32) * 0.85 + np.asarray(mid, dtype=np.float32) * 0.15
    pixels += rng.normal(0.0, NOISE, pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    image.save(part, "PNG", compress_level=1)
    part.replace(path)  # never a half-written picture under the final name
    return path
