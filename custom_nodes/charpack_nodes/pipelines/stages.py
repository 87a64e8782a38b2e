"""Stage assembly: the pipeline's wiring, written once for all three uses.

The orchestrator builds API-format JSON with :func:`build_pipeline`; the node pack's macro nodes
expand into :func:`build_stage` / :func:`build_pipeline` subgraphs (with ``prefix`` set to the
parent node's id and live values in place of links); ``workflows/api/*.json`` are generated from
both. The stage builders live by domain: ``models.py`` (checkpoint, LoRA, prompts, reference,
FaceID), ``base.py``, ``face.py`` (detection, InstantID, FaceDetailer) and ``finish.py``
(upscale, identity score, saver); each exports the node ids it emits. Node ids are stable and
say what a node is (``base.ckpt``, ``faceid.apply``, ``upscale.run``); shared nodes (loaders,
prompts, detectors) are created once and reused because :meth:`Graph.node` returns the existing
node for an id it already holds.

Also owns :func:`stage_name`: the stage a node id's prefix reports under, in the pack file's
vocabulary (``detail.run`` times the ``face_detailer`` stage).

Inputs of type ``Source`` are either a link ``[node_id, index]`` or, in node expansion, the live
value ComfyUI handed to the macro node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import catalog as C
from . import face, finish, gate
from .base import add_base
from .graph import Graph, Link
from .params import PipelineSpec

Source = Any
STAGES: tuple[str, ...] = (
    C.STAGE_BASE,
    C.STAGE_INSTANTID,
    C.STAGE_FACE_DETAILER,
    C.STAGE_UPSCALE,
)
INPUT_IMAGE = "input.image"  # a single stage's input image, loaded from the input folder


def _prefix(node_id: str) -> str:
    return node_id.partition(".")[0]


# Node-id prefixes whose stage the pack file calls otherwise (every other prefix is its name).
_REPORTED_AS: dict[str, str] = {
    _prefix(face.DETAIL): C.STAGE_FACE_DETAILER,
    _prefix(face.DETECT_BBOX): C.STAGE_DETECTION,
}


def stage_name(prefix: str) -> str:
    """The stage a node-id prefix (``base``, ``detail`` …) is reported as: the pack file's name
    for it (``face_detailer``), else the prefix itself. Idempotent on the pack file's names."""
    return _REPORTED_AS.get(prefix, prefix)


@dataclass(frozen=True)
class Built:
    """A built graph and links to its final image (and identity score, when scored)."""

    graph: Graph
    image: Source
    score: Link | None = None


def build_pipeline(spec: PipelineSpec, *, prefix: str = "", outputs: bool = True) -> Built:
    """The full pipeline for one job; stages switched off in ``spec`` are left out. With
    ``early_gate`` on (and the identity score), the early gate sits after the InstantID fix.

    ``outputs=False`` leaves out the identity score and the saver (the macro node's case: the
    user wires their own).
    """
    g = Graph(prefix)
    image: Source = add_base(g, spec)
    if spec.instantid.enabled:
        image = face.add_instantid_fix(g, spec, image)
    if outputs and spec.identity.enabled and spec.early_gate.enabled:
        # Only where the final score decides: a macro node's user wires their own outputs.
        image = gate.add_early_gate(g, spec, image)
    if spec.face_detailer.enabled:
        image = face.add_face_detailer(g, spec, image)
    if spec.upscale.enabled:
        image = finish.add_upscale(g, spec, image)
    return _finish(g, spec, image, outputs)


def build_stage(
    stage: str,
    spec: PipelineSpec,
    *,
    image: Source = None,
    input_image: str = "input.png",
    prefix: str = "",
    outputs: bool = True,
) -> Built:
    """One stage on its own. Stages after ``base`` work on ``image`` (a link or live value) or,
    when it is None, on ``input_image`` loaded from the server's input folder."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
    g = Graph(prefix)
    if stage == C.STAGE_BASE:
        result: Source = add_base(g, spec)
    else:
        if image is None:
            image = g.node(C.LOAD_IMAGE.class_type, INPUT_IMAGE, image=input_image).out(0)
        if stage == C.STAGE_INSTANTID:
            result = face.add_instantid_fix(g, spec, image)
        elif stage == C.STAGE_FACE_DETAILER:
            result = face.add_face_detailer(g, spec, image)
        else:
            result = finish.add_upscale(g, spec, image)
    return _finish(g, spec, result, outputs)


def _finish(g: Graph, spec: PipelineSpec, image: Source, outputs: bool) -> Built:
    score = None
    if outputs:
        if spec.identity.enabled:
            score = finish.add_identity_score(g, spec, image)
        finish.add_output(g, spec, image, score)
    forbidden = [n.id for n in g if n.class_type in C.FORBIDDEN]
    if forbidden:  # pragma: no cover - guarded by construction, kept as a last line of defence
        raise AssertionError(f"forbidden node types emitted: {forbidden}")
    return Built(graph=g, image=image, score=score)
