"""CharpackSavePack: pack images at safe paths unique per prompt, without stalling the GPU.

Saves ``output/<pack>/<scene>/<name>.<prompt id>.png`` (``<name>_00.<prompt id>.png``, ``_01`` …
for a batch) with a ``<name>.<prompt id>.json`` sidecar (pack, scene, name, seed, score,
parameters, the prompt id, sha256 and size of the PNG), written after the PNG. The prompt id in
every name means no prompt ever overwrites, or is served in place of, another prompt's file
(an earlier run of a changed pack, the same graph queued twice); the node is never taken from
ComfyUI's cache, so a resubmitted identical prompt writes its own files too. The prompt id is
ComfyUI's (the executing context; a UUID chosen by the orchestrator, or by the server).
PNG text chunks: ``parameters`` (A1111 style, what image hosts read), ``prompt`` and ``workflow``
as ComfyUI writes them (left out under ``--disable-metadata``), ``seed`` and ``score``. Names are
checked by ``ops/paths.py`` (nothing can be written outside the output folder); encoding and
writing happen on the background writer of ``ops/saving.py``, so the node returns in about a
millisecond while the image is still being written. The UI output lists both files
(``images`` and ``sidecars``) so a client finds them in ``/history``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import replace
from typing import Any

import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from .ops import paths, saving, specs
from .pipelines import OutputSpec, catalog, params
from .pipelines.checks import bounds

log = logging.getLogger("charpack_nodes.save")

NODE = catalog.SAVE_PACK.class_type
_PRESET = OutputSpec()
_COMPRESS_RANGE = bounds(OutputSpec, "compress_level")
# extra_pnginfo keys that look like credentials never reach a file (clients put workflow there).
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|token|secret|passw|auth|credential)")


_OWN_KEYS = frozenset({"parameters", "prompt", "seed", "score"})


def _usable_key(key: object) -> bool:
    if not isinstance(key, str) or not 1 <= len(key) <= 79 or "\0" in key:
        return False
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def png_text(
    *, parameters: str, seed: int, score: float | None, prompt: Any, extra_pnginfo: Any
) -> tuple[tuple[str, str], ...]:
    """The PNG text chunks, in the order they are written."""
    text: list[tuple[str, str]] = []
    if parameters:
        text.append(("parameters", parameters))
    if not args.disable_metadata:
        if prompt is not None:
            text.append(("prompt", json.dumps(prompt)))
        for key, value in (extra_pnginfo or {}).items():
            if key in _OWN_KEYS:
                continue  # written by this node from its inputs; never twice
            if not _usable_key(key):
                log.warning(
                    "%s: not writing extra_pnginfo %r into the PNG (PNG keys are 1-79 Latin-1 "
                    "characters)",
                    NODE,
                    key,
                )
                continue
            if _SECRET_KEY.search(key):
                log.warning(
                    "%s: not writing extra_pnginfo %r into the PNG (looks like a credential)",
                    NODE,
                    key,
                )
                continue
            text.append((key, json.dumps(value)))
    text.append(("seed", str(seed)))
    if score is not None:
        text.append(("score", f"{score:.6f}"))
    return tuple(text)


def _current_prompt_id() -> str:
    """The running prompt's id; a fresh UUID when no prompt runs (a direct call)."""
    context = get_executing_context()
    return context.prompt_id if context is not None else str(uuid.uuid4())


def prompt_tag(prompt_id: str) -> str:
    """The part of every file name that names the prompt: its id when it is a canonical UUID
    (what the orchestrator and ComfyUI choose), else 32 hex digits of its sha256 (any client may
    post any string as a prompt id; it must never become a path)."""
    try:
        if str(uuid.UUID(prompt_id)) == prompt_id:
            return prompt_id
    except ValueError:
        pass
    return hashlib.sha256(prompt_id.encode("utf-8", "replace")).hexdigest()[:32]


def _cpu_image(image: torch.Tensor) -> Any:
    # A GPU tensor is converted where it lives (fast) and copied as 8 bit; a CPU tensor is handed
    # over as is and converted on the writer thread (IMAGE tensors are never changed in place).
    if image.device.type == "cpu":
        return image
    return image.detach().mul(255).clamp_(0, 255).to(torch.uint8).cpu().numpy()


class CharpackSavePack(io.ComfyNode):
    """Facade over ``ops.paths`` and ``ops.saving``."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Save pack image (charpack)",
            category="charpack/output",
            description="Saves images into output/<pack>/<scene>/ under names unique per "
            "prompt, with PNG metadata and a JSON sidecar, encoding them off the execution thread.",
            inputs=[
                io.Image.Input("images", tooltip="Images to save."),
                io.String.Input(
                    "pack",
                    default=_PRESET.pack,
                    tooltip="Pack folder under output/ (one name: no '/', '..' or "
                    "control characters).",
                ),
                io.String.Input(
                    "scene",
                    default=_PRESET.scene,
                    tooltip="Scene folder inside the pack (one name, same rules).",
                ),
                io.String.Input(
                    "name",
                    default=_PRESET.name,
                    tooltip="File name stem: <name>.<prompt id>.png and .json; a batch "
                    "gets <name>_00, <name>_01 … Every prompt writes its own files.",
                ),
                io.Int.Input(
                    "seed",
                    default=specs.DEFAULTS.sampler.seed,
                    min=0,
                    max=params.MAX_SEED,
                    tooltip="Seed, recorded in the metadata and the sidecar.",
                ),
                io.String.Input(
                    "parameters",
                    default="",
                    multiline=True,
                    tooltip="Generation parameters text (A1111 style) for the PNG "
                    "metadata; image hosts read it.",
                ),
                io.Int.Input(
                    "compress_level",
                    default=_PRESET.compress_level,
                    min=_COMPRESS_RANGE[0],
                    max=_COMPRESS_RANGE[1],
                    tooltip="PNG zlib level; 1 is fast and about as small as 4 here "
                    "(0 = no compression, about twice the size).",
                ),
                io.Float.Input(
                    "score",
                    optional=True,
                    force_input=True,
                    tooltip="Identity score to record (from Identity score).",
                ),
            ],
            outputs=[],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        # Never a cache hit: a cached saver would replay the UI output naming an earlier
        # prompt's files instead of writing this prompt's (ComfyUI evaluates this per prompt,
        # inside its executing context).
        return _current_prompt_id()

    @classmethod
    def execute(
        cls,
        images: torch.Tensor,
        pack: str,
        scene: str,
        name: str,
        seed: int,
        parameters: str,
        compress_level: int,
        score: float | None = None,
    ) -> io.NodeOutput:
        batch = int(images.shape[0])
        output_dir = folder_paths.get_output_directory()
        prompt_id = _current_prompt_id()
        tag = prompt_tag(prompt_id)
        try:
            targets = [
                paths.pack_paths(
                    output_dir, pack=pack, scene=scene, name=name, index=i, batch_size=batch
                )
                for i in range(batch)
            ]
        except paths.UnsafeName as error:
            raise ValueError(f"{NODE}: {error}") from None
        targets = [replace(t, stem=f"{t.stem}.{tag}") for t in targets]
        hidden = cls.hidden
        text = png_text(
            parameters=parameters, seed=seed, score=score,
            prompt=hidden.prompt if hidden else None,
            extra_pnginfo=hidden.extra_pnginfo if hidden else None,
        )  # fmt: skip
        writer = saving.writer()
        for index, target in enumerate(targets):
            sidecar = {
                "pack": pack, "scene": scene, "name": name, "index": index, "seed": seed,
                "score": score, "parameters": parameters, "compress_level": compress_level,
                "prompt_id": prompt_id,
            }  # fmt: skip
            job = saving.SaveJob(
                image=_cpu_image(images[index]),
                paths=target,
                text=text,
                sidecar=sidecar,
                compress_level=compress_level,
            )
            try:
                writer.submit(job)
            except saving.WriteFailed as error:
                raise ValueError(
                    f"{NODE}: an earlier image could not be written: {error}. Check free disk "
                    "space and that ComfyUI may write to its output folder; this image was "
                    "not saved either"
                ) from None
        ui = {
            "images": [
                {"filename": t.png_name, "subfolder": t.subfolder, "type": "output"}
                for t in targets
            ],
            "sidecars": [
                {"filename": t.sidecar_name, "subfolder": t.subfolder, "type": "output"}
                for t in targets
            ],
        }
        return io.NodeOutput(ui=ui)
