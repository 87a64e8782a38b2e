"""torchvision.transforms stand-in: the composition helpers ComfyUI's ACE VAE imports."""

from __future__ import annotations

from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, x):
        return functional.normalize(x, self.mean, self.std, self.inplace)
