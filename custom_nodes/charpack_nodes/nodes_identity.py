"""CharpackIdentityScore: how much each image's face looks like the character's reference.

The score is the ArcFace cosine similarity (InsightFace on ONNX Runtime, ``ops/identity.py``)
between the mean embedding of the reference face(s) and the largest face of each image: about
1.0 for the same photo, typically well above 0.5 for the same person, near 0 for strangers. The
node returns the lowest score of the batch as a FLOAT and lists every score in its UI output, so
a client reads them from ``/history`` (``{"scores": [...], "faces": [...], "warnings": [...]}``),
and ``text``: the lines ``web/identity.js`` shows on the node in the graph editor.

The reference: the ``character`` input (the Character node's face files, read here, so an
editor graph needs no second LoadImage of the same face), the ``reference`` images, or both
(all averaged); at least one of them must be connected.

A reference without a face stops the prompt (nothing sensible can be scored). A generated image
without a face is its own result, not a score: ``null`` in ``scores``, ``false`` in ``faces``
and a warning in the log and the UI output (the FLOAT output, which must be a number, counts it
as 0.0). The image is still passed on (and saved), and the orchestrator's identity gate retries
that job with a new seed, which may show the face.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import folder_paths
import numpy as np
from comfy_api.latest import io

from .ops import identity
from .ops.images import rgb_uint8
from .pipelines import CharacterSpec, IdentitySpec, catalog, params
from .widgets import Character

log = logging.getLogger("charpack_nodes.identity")

NODE = catalog.IDENTITY_SCORE.class_type
_PRESET = IdentitySpec()


def insightface_root() -> str:
    # Where both cubiq packs look as well (hard-coded there): one copy of the models serves all.
    return os.path.join(folder_paths.models_dir, catalog.FOLDER_INSIGHTFACE)


def reference_pictures(reference: Any, character: CharacterSpec | None) -> list[np.ndarray]:
    """The reference faces: the ``reference`` images, then the character's face files."""
    pictures = [] if reference is None else [rgb_uint8(image) for image in reference]
    for name in () if character is None else character.face_images:
        path = folder_paths.get_annotated_filepath(name)
        pictures.append(identity.read_picture(path, name=name))
    return pictures


def score_faces(
    node: str,
    images: Any,
    *,
    reference: Any,
    character: CharacterSpec | None,
    model_pack: str,
    provider: str,
) -> list[float | None]:
    """Each image's score against the reference faces (``reference_pictures``), with the
    errors as the node's ValueError naming the input(s) the faces came from."""
    connected = (("reference", reference), ("character", character))
    source = " and ".join(f"'{name}'" for name, value in connected if value is not None)
    try:
        return identity.score_images(
            root=insightface_root(), pack=model_pack, provider=provider,
            references=reference_pictures(reference, character),
            images=[rgb_uint8(image) for image in images],
        )  # fmt: skip
    except (identity.NoReferenceFace, identity.ReferenceFileMissing) as error:
        raise ValueError(f"{node}: {error} (input {source})") from None
    except identity.IdentityError as error:
        raise ValueError(f"{node}: {error}") from None


def score_text(values: list[float | None], warnings: list[str]) -> list[str]:
    """What the node shows in the editor: the batch's lowest score, then each warning."""
    shown = ["no face" if v is None else f"{v:.3f}" for v in values]
    lowest = min(0.0 if v is None else v for v in values)
    line = f"score {lowest:.3f} (lowest of {len(values)})"
    if len(values) > 1:
        line += ": " + ", ".join(shown)
    return [line, *warnings]


class CharpackIdentityScore(io.ComfyNode):
    """Facade over ``ops.identity.score_images``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Identity score (charpack)",
            category="charpack/identity",
            description="ArcFace cosine similarity between the reference face (the "
            "character's face files or reference images) and each image's largest face "
            "(InsightFace on ONNX Runtime); the lowest score of the batch is the output and "
            "is shown on the node, every score is in the node's UI output.",
            inputs=[
                io.Image.Input("images", tooltip="Images to score (passed through unchanged)."),
                io.Image.Input(
                    "reference",
                    optional=True,
                    tooltip="Face reference image(s); several are averaged into one "
                    "identity. Connect this or 'character' (or both: all are averaged).",
                ),
                Character.Input(
                    "character",
                    optional=True,
                    tooltip="The Character node: its face image(s) are the reference, no "
                    "second LoadImage needed. Connect this or 'reference'.",
                ),
                io.Combo.Input(
                    "model_pack",
                    options=list(params.IDENTITY_MODEL_PACKS),
                    default=_PRESET.model_pack,
                    tooltip="InsightFace model pack under models/insightface/models/ "
                    "(buffalo_l: w600k_r50 ArcFace; antelopev2: glintr100).",
                ),
                io.Combo.Input(
                    "provider",
                    options=list(params.PROVIDERS),
                    default=_PRESET.provider,
                    tooltip="ONNX Runtime execution provider; CPU is plenty (one "
                    "small face crop per image), CUDA needs onnxruntime-gpu.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The images, unchanged."),
                io.Float.Output(
                    display_name="score",
                    tooltip="Lowest score in the batch "
                    "(cosine similarity, -1..1; 0.0 when an image has no face).",
                ),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        images: Any,
        model_pack: str,
        provider: str,
        reference: Any = None,
        character: CharacterSpec | None = None,
    ) -> io.NodeOutput:
        if reference is None and character is None:
            raise ValueError(
                f"{NODE}: no reference face: connect input 'character' (a Character node) or "
                "input 'reference' (face images, e.g. from LoadImage)"
            )
        scores = score_faces(
            NODE, images, reference=reference, character=character, model_pack=model_pack,
            provider=provider,
        )  # fmt: skip
        warnings = []
        for index, score in enumerate(scores, start=1):
            if score is None:
                message = (
                    f"no face found in image {index} of {len(scores)}; no score, so an "
                    "identity gate retries it with another seed"
                )
                log.warning("%s: %s", NODE, message)
                warnings.append(message)
        values = [None if s is None else round(s, 6) for s in scores]
        ui = {
            "scores": values,
            "faces": [s is not None for s in scores],
            "warnings": warnings,
            "model_pack": [model_pack],
            "text": score_text(values, warnings),
        }
        lowest = min(0.0 if s is None else s for s in values)
        return io.NodeOutput(images, lowest, ui=ui)
