"""THE single source of truth for charpack's pipeline — standard library only.

No torch, no ComfyUI, no HTTP: the orchestrator, the node pack and the generated workflow files
all build their graphs from here. Public surface:

- :class:`Graph` / :class:`Node` — a ComfyUI-``GraphBuilder``-shaped builder with stable ids;
- ``catalog`` — every node type and input name charpack emits, one spelling each;
- the frozen parameter types with the presets (:class:`PipelineSpec` and its parts);
- :func:`build_pipeline` / :func:`build_stage` — the stage builders.
"""

from __future__ import annotations

from . import catalog
from .graph import ApiGraph, ApiNode, Graph, GraphError, Link, Node, is_link, to_json
from .params import (
    DEFAULT_NEGATIVE,
    CharacterSpec,
    DetailerSpec,
    DetectionSpec,
    EarlyGateSpec,
    FaceIDSpec,
    IdentitySpec,
    Img2ImgSpec,
    InstantIDSpec,
    LoraSpec,
    OutputSpec,
    PAGSpec,
    ParameterError,
    PipelineSpec,
    PoseSpec,
    SamplerSpec,
    UpscaleSpec,
    evolve,
)
from .prompts import negative_prompt, parameters_text, positive_prompt
from .stages import STAGES, Built, build_pipeline, build_stage

__all__ = [
    "DEFAULT_NEGATIVE",
    "STAGES",
    "ApiGraph",
    "ApiNode",
    "Built",
    "CharacterSpec",
    "DetailerSpec",
    "DetectionSpec",
    "EarlyGateSpec",
    "FaceIDSpec",
    "Graph",
    "GraphError",
    "IdentitySpec",
    "Img2ImgSpec",
    "InstantIDSpec",
    "Link",
    "LoraSpec",
    "Node",
    "OutputSpec",
    "PAGSpec",
    "ParameterError",
    "PipelineSpec",
    "PoseSpec",
    "SamplerSpec",
    "UpscaleSpec",
    "build_pipeline",
    "build_stage",
    "catalog",
    "evolve",
    "is_link",
    "negative_prompt",
    "parameters_text",
    "positive_prompt",
    "to_json",
]
