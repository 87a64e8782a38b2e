"""CharpackIdentityGate: pass on-identity images, stop the rest of the branch for the others.

The gate reads an identity score (the FLOAT of an Identity score node: the batch's lowest, so
the batch passes or stops as one) or scores each image itself against a Character's face files
(``ops/identity.py``, the preset model pack and provider; each image passes or not on its own).
Images at or above ``threshold`` go on; when none does, the gate returns ComfyUI's silent
``ExecutionBlocker`` instead of images, so the nodes after it (a Save pack) do not run and the
prompt still succeeds: an editor batch saves only on-identity images. The UI output says what
happened (``passed``: one boolean per image or batch, ``threshold``, ``text`` shown on the node
by ``web/identity.js``). The threshold's preset is the pack file's identity threshold.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io
from comfy_execution.graph_utils import ExecutionBlocker

from .nodes_identity import score_faces
from .pipelines import CharacterSpec, IdentitySpec, catalog
from .pipelines.scene import IDENTITY_THRESHOLD
from .widgets import Character

NODE = catalog.IDENTITY_GATE.class_type
# The pack file's default identity.threshold too (orchestrator/pack/model.py reads the same one).
THRESHOLD = IDENTITY_THRESHOLD
_PRESET = IdentitySpec()


def verdict(scores: list[float | None], threshold: float) -> list[bool]:
    """Whether each score passes (None, no face, never does)."""
    return [s is not None and s >= threshold for s in scores]


def gate_text(scores: list[float | None], passed: list[bool], threshold: float) -> list[str]:
    shown = ", ".join("no face" if s is None else f"{s:.3f}" for s in scores)
    if all(passed):
        return [f"passed: {shown} >= threshold {threshold:.3f}"]
    if not any(passed):
        return [f"blocked: {shown} below threshold {threshold:.3f}; the rest of this branch "
                "does not run"]  # fmt: skip
    return [f"passed {sum(passed)} of {len(passed)} images: {shown} at threshold {threshold:.3f}"]


class CharpackIdentityGate(io.ComfyNode):
    """Facade over ``ops.identity.score_images`` and ComfyUI's execution blocking."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Identity gate (charpack)",
            category="charpack/identity",
            description="Passes on the images whose identity score is at or above the "
            "threshold and stops the rest of the branch (e.g. Save pack) when none is, so a "
            "batch saves only on-identity images; the prompt still succeeds.",
            inputs=[
                io.Image.Input("images", tooltip="The images to gate."),
                io.Float.Input(
                    "score",
                    optional=True,
                    force_input=True,
                    tooltip="The Identity score node's score (the batch's lowest): the "
                    "whole batch passes or stops. Connect this or 'character'.",
                ),
                Character.Input(
                    "character",
                    optional=True,
                    tooltip="The Character node: the gate scores each image against its face "
                    "image(s) and passes each image on its own. Connect this or 'score'.",
                ),
                io.Float.Input(
                    "threshold",
                    default=THRESHOLD,
                    min=-1.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Lowest identity score that passes (cosine similarity; the "
                    "pack file's identity threshold is the preset).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="images",
                    tooltip="The images that passed; nothing after the gate runs when none did.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        images: Any,
        threshold: float,
        score: float | None = None,
        character: CharacterSpec | None = None,
    ) -> io.NodeOutput:
        if score is not None:
            scores: list[float | None] = [float(score)]
        elif character is not None:
            scores = score_faces(
                NODE, images, reference=None, character=character,
                model_pack=_PRESET.model_pack, provider=_PRESET.provider,
            )  # fmt: skip
        else:
            raise ValueError(
                f"{NODE}: nothing to gate on: connect input 'score' (from an Identity score "
                "node) or input 'character' (a Character node)"
            )
        passed = verdict(scores, threshold)
        text = gate_text(scores, passed, threshold)
        ui = {"passed": passed, "threshold": [threshold], "text": text}
        if not any(passed):
            # A silent blocker (no message): the branch stops, the prompt is no failure.
            return io.NodeOutput(ExecutionBlocker(None), ui=ui)
        if all(passed):
            return io.NodeOutput(images, ui=ui)
        return io.NodeOutput(images[[i for i, ok in enumerate(passed) if ok]], ui=ui)
