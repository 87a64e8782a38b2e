"""The early identity gate: score the face after the InstantID fix and stop a clearly
off-identity attempt before the detailer, the upscale and the save.

The gate is two nodes: an Identity score of the 832×1216 image against the face references
(:data:`GATE_SCORE`, the same scorer as the final score, so the two scores are comparable) and
the Identity gate (:data:`GATE`) fed by its score. Below ``early_gate.threshold`` the gate
returns ComfyUI's silent ``ExecutionBlocker``: every node after it (FaceDetailer, upscale,
final score, saver) is skipped and the prompt still succeeds. The orchestrator reads the
gate's UI output (``passed: [false]``) and the early score from ``/history``
(``charpack.run.retry_rules.early_stop``) and retries the job with a new seed.

Exports the node ids it emits and :data:`STOPPED_AT` (what a blocked attempt records as
``stopped_at``); other modules import these, never re-spell them.
"""

from __future__ import annotations

from typing import Any

from . import catalog as C
from .finish import add_identity_score
from .graph import Graph, Link
from .params import PipelineSpec

GATE_SCORE = "early_gate.score"
GATE = "early_gate.run"
STOPPED_AT = GATE.partition(".")[0]  # an attempt's ``stopped_at`` when the gate blocked it

Source = Any  # a link [node_id, index] or, in node expansion, the live value


def add_early_gate(g: Graph, spec: PipelineSpec, image: Source) -> Link:
    """Score ``image`` against the face references and gate it at ``early_gate.threshold``;
    the returned link carries the image on, or blocks everything downstream."""
    score = add_identity_score(g, spec, image, GATE_SCORE)
    gate = g.node(
        C.IDENTITY_GATE.class_type,
        GATE,
        images=image,
        score=score,
        threshold=spec.early_gate.threshold,
    )
    return gate.out(C.IDENTITY_GATE.output("images"))
