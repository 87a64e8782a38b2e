"""Parameter types of what a scene adds and where its image goes: an init image, a pose
reference, the identity score and the output.

Split from ``params.py`` (the character and the stages) by domain; ``params`` re-exports these
types, so ``params.PoseSpec`` and ``pipelines.PoseSpec`` are these. Each checks its own ranges
in ``__post_init__`` and raises :class:`~charpack_nodes.pipelines.checks.ParameterError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checks import ParameterError, _choice, _name, _range, check_range, ranged

POSE_PREPROCESSORS: tuple[str, ...] = ("none", "canny")
SAVE_MODES: tuple[str, ...] = ("pack", "image", "preview", "none")
IDENTITY_MODEL_PACKS: tuple[str, ...] = ("buffalo_l", "antelopev2")
PROVIDERS: tuple[str, ...] = ("CPU", "CUDA")


@dataclass(frozen=True)
class Img2ImgSpec:
    """Start from an init image (scaled to the output size) instead of empty latent noise."""

    image: str
    denoise: float = 0.5

    def __post_init__(self) -> None:
        _name("init_image", self.image)
        _range("init_denoise", self.denoise, 0.05, 1.0)


@dataclass(frozen=True)
class PoseSpec:
    """A pose/composition reference through a ControlNet on the base sampler only.

    ``preprocess="canny"`` makes the hint from a photo with core Canny; ``"none"`` uses the image
    as a ready hint (an openpose skeleton or depth map for a matching ControlNet).
    """

    image: str
    control_net_name: str = "controlnet-canny-sdxl-1.0.safetensors"
    strength: float = 0.6
    start_percent: float = 0.0
    end_percent: float = 0.8
    preprocess: str = "canny"
    canny_low: float = 0.4
    canny_high: float = 0.8

    def __post_init__(self) -> None:
        _name("pose.image", self.image)
        _name("pose.control_net", self.control_net_name)
        _range("pose.strength", self.strength, 0.0, 2.0)
        _range("pose.start_percent", self.start_percent, 0.0, 1.0)
        _range("pose.end_percent", self.end_percent, 0.0, 1.0)
        if self.start_percent >= self.end_percent:
            raise ParameterError("pose.end_percent", "must be greater than start_percent")
        _choice("pose.preprocess", self.preprocess, POSE_PREPROCESSORS)
        _range("pose.canny_low", self.canny_low, 0.01, 0.99)
        _range("pose.canny_high", self.canny_high, 0.01, 0.99)


# The lowest identity score an image may have: the pack file's default ``identity.threshold``
# (orchestrator/pack/model.py) and the Identity gate node's preset, one value for both.
IDENTITY_THRESHOLD = 0.45


@dataclass(frozen=True)
class IdentitySpec:
    """Server-side ArcFace score of the final image against the face references."""

    enabled: bool = True
    model_pack: str = "buffalo_l"
    provider: str = "CPU"

    def __post_init__(self) -> None:
        _choice("identity.model_pack", self.model_pack, IDENTITY_MODEL_PACKS)
        _choice("identity.provider", self.provider, PROVIDERS)


@dataclass(frozen=True)
class OutputSpec:
    """Where the final image goes. ``save="pack"`` uses CharpackSavePack (fast, with sidecar)."""

    save: str = "pack"
    pack: str = "pack"
    scene: str = "scene"
    name: str = "image"
    compress_level: int = ranged(1, 0, 9)

    def __post_init__(self) -> None:
        _choice("output.save", self.save, SAVE_MODES)
        for part in ("pack", "scene", "name"):
            _name(f"output.{part}", getattr(self, part))
        check_range("output.compress_level", self, "compress_level")
