"""torchvision.transforms.functional stand-in: resize and normalize on torch, rotate missing."""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(tensor, mean, std, inplace=False):
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if mean.ndim == 1:
        mean = mean.view(-1, 1, 1)
    if std.ndim == 1:
        std = std.view(-1, 1, 1)
    return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std


def resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True):
    if isinstance(interpolation, InterpolationMode):
        mode = interpolation.value
    else:
        mode = str(interpolation)
    squeeze = img.ndim == 3
    x = img.unsqueeze(0) if squeeze else img
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(x.float(), size=list(size), mode=mode, **kwargs).to(img.dtype)
    out = out.reshape(*lead, *out.shape[-3:])
    return out.squeeze(0) if squeeze else out


def rotate(*args, **kwargs):
    raise NotImplementedError("torchvision stub: rotate is not available")
