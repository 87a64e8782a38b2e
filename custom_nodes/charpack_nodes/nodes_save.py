"""CharpackSavePack: pack images at safe paths unique per prompt, without stalling the GPU.

Saves ``output/<pack>/<scene>/<name>.<prompt id>.png`` (``<name>_00.<prompt id>.png``, ``_01`` …
for a batch) with a ``<name>.<prompt id>.json`` sidecar (pack, scene, name, seed, score,
parameters, the prompt id, sha256 and size of the PNG), written after the PNG. The prompt id in
every name means no prompt ever overwrites, or is served in place of, another prompt's file
(an earlier run of a changed pack, the same graph queued twice); the node is never taken from
ComfyUI's cache, so a resubmitted identical prompt writes its own files too. The prompt id is
ComfyUI's (the executing context; a UUID chosen by the orchestrator, or by the server). With
``overwrite`` on, the names are exactly ``<name>.png`` / ``<name>.json`` (``<name>_00`` … for a
batch), each replacing an earlier file by an atomic rename.
PNG text chunks: ``parameters`` (A1111 style, what image hosts read), ``prompt`` and ``workflow``
as ComfyUI writes them (left out under ``--disable-metadata``), ``seed`` and ``score``. ``seed``
and ``parameters`` come from a pipeline node's outputs in the editor and as literal values from
the orchestrator; they are widgets (an API workflow's literals survive the editor, which drops a
literal given to a socket-only input) without "control after generate", so the editor never
randomises the recorded seed. Unconnected (seed -1, parameters empty), the sidecar records
``seed: null`` and the PNG has no ``parameters`` or ``seed`` chunk.
Names are checked by ``ops/paths.py`` (nothing can be written outside the output folder).
On the execution thread the node only converts each image to 8 bit and writes its editor
preview (``ops/preview.py``: long side <= 1024 px, atomically, into ComfyUI's temp folder);
encoding and writing the full image happen on the background writer of ``ops/saving.py``.
Measured for one 3328x4864 CPU image on the project's 2-core machine: the node returns in
about 110 ms (100-150 ms at load 1, median 150 ms at load 2.5; 55-100 ms of it the 8-bit
conversion the writer did before, 55-80 ms the preview with its pruning), against seconds for a
full encode on the execution thread (``bench/SAVE.md``). UI
output: ``images`` the previews (type ``temp``: complete when the editor hears of them),
``pack_images`` the full-size files and ``sidecars`` their sidecars (type ``output``; a client
reading ``/history`` waits out the writer's renames, see ``ops/saving.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import replace
from typing import Any

import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from .ops import paths, preview, saving
from .ops.images import to_uint8
from .pipelines import OutputSpec, catalog, params
from .pipelines.checks import bounds

log = logging.getLogger("charpack_nodes.save")

NODE = catalog.SAVE_PACK.class_type
_PRESET = OutputSpec()
_COMPRESS_RANGE = bounds(OutputSpec, "compress_level")
# extra_pnginfo keys that look like credentials never reach a file (clients put workflow there).
_SECRET_KEY = re.compile(r"(?i)(api[_-]?key|token|secret|passw|auth|credential)")


NO_SEED = -1  # the seed widget's default: no seed to record

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
    *, parameters: str, seed: int | None, score: float | None, prompt: Any, extra_pnginfo: Any
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
    if seed is not None:
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
                    tooltip="File name stem: <name>.<prompt id>.png and .json (exactly "
                    "<name>.png with overwrite on); a batch gets <name>_00, <name>_01 …",
                ),
                io.Int.Input(
                    "compress_level",
                    default=_PRESET.compress_level,
                    min=_COMPRESS_RANGE[0],
                    max=_COMPRESS_RANGE[1],
                    tooltip="PNG zlib level; 1 is fast and about as small as 4 here "
                    "(0 = no compression, about twice the size).",
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    optional=True,
                    tooltip="Off: every prompt writes its own <name>.<prompt id>.png and .json. "
                    "On: writes exactly <name>.png and <name>.json (a batch <name>_00 …), "
                    "replacing the files an earlier prompt wrote there (atomically: never half a "
                    "file).",
                ),
                # Widgets, so an API workflow's literal values survive the editor (it drops a
                # literal given to a socket-only input), but never a seed the editor randomises:
                # control_after_generate is off. In the editor, connect the pipeline node's
                # seed and parameters outputs to them.
                io.Int.Input(
                    "seed",
                    default=NO_SEED,
                    min=NO_SEED,
                    max=params.MAX_SEED,
                    optional=True,
                    control_after_generate=False,
                    tooltip="Seed to record in the metadata and the sidecar: connect a "
                    "pipeline node's seed output (-1, the default: none recorded).",
                ),
                io.String.Input(
                    "parameters",
                    default="",
                    multiline=True,
                    optional=True,
                    tooltip="Generation parameters text (A1111 style) for the PNG metadata, "
                    "which image hosts read: connect a pipeline node's parameters output.",
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
        compress_level: int,
        overwrite: bool = False,
        seed: int | None = None,
        parameters: str | None = None,
        score: float | None = None,
    ) -> io.NodeOutput:
        batch = int(images.shape[0])
        prompt_id = _current_prompt_id()
        tag = prompt_tag(prompt_id)
        try:
            targets = [
                paths.pack_paths(
                    folder_paths.get_output_directory(), pack=pack, scene=scene, name=name,
                    index=i, batch_size=batch,
                )
                for i in range(batch)
            ]  # fmt: skip
            previews = [
                paths.preview_paths(
                    folder_paths.get_temp_directory(), pack=pack, scene=scene,
                    stem=f"{t.stem}.{tag}",
                )
                for t in targets
            ]  # fmt: skip
        except paths.UnsafeName as error:
            raise ValueError(f"{NODE}: {error}") from None
        if not overwrite:
            targets = [replace(t, stem=f"{t.stem}.{tag}") for t in targets]
        if seed is not None and seed < 0:
            seed = None  # NO_SEED: nothing connected, nothing recorded
        parameters = parameters or None
        hidden = cls.hidden
        text = png_text(
            parameters=parameters or "", seed=seed, score=score,
            prompt=hidden.prompt if hidden else None,
            extra_pnginfo=hidden.extra_pnginfo if hidden else None,
        )  # fmt: skip
        writer = saving.writer()
        shown: list[paths.PackPaths] = []
        for index, target in enumerate(targets):
            # 8 bit once, here (on the GPU when the tensor is there): the preview needs the
            # pixels now, and the writer then only encodes.
            pixels = to_uint8(images[index])
            if _write_preview(pixels, previews[index]):
                shown.append(previews[index])
            sidecar = {
                "pack": pack, "scene": scene, "name": name, "index": index, "seed": seed,
                "score": score, "parameters": parameters, "compress_level": compress_level,
                "prompt_id": prompt_id,
            }  # fmt: skip
            job = saving.SaveJob(
                image=pixels,
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
            "images": [_ref(p.png_name, p.subfolder, "temp") for p in shown],
            "pack_images": [_ref(t.png_name, t.subfolder, "output") for t in targets],
            "sidecars": [_ref(t.sidecar_name, t.subfolder, "output") for t in targets],
        }
        return io.NodeOutput(ui=ui)


def _ref(filename: str, subfolder: str, kind: str) -> dict[str, str]:
    return {"filename": filename, "subfolder": subfolder, "type": kind}


def _write_preview(pixels: Any, target: paths.PackPaths) -> bool:
    """Write the editor preview; False (logged) when the temp folder refuses it: a missing
    preview must never cost the pack file."""
    try:
        preview.write_preview(
            pixels,
            target,
            root=os.path.join(folder_paths.get_temp_directory(), paths.PREVIEW_FOLDER),
        )
    except OSError as error:
        log.error(
            "%s: preview %s not written (%s); the pack image is still saved. Check that "
            "ComfyUI may write to its temp folder",
            NODE,
            target.png,
            error,
        )
        return False
    return True
