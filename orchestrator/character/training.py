"""The training driver: a character LoRA trained on a ComfyUI server, one chunk prompt at a time.

Owns :func:`train_character`: it uploads the dataset into the server's
``input/charpack_train/<char>-v<N>-<hash8>/``, posts the chunks of the plan
(:func:`charpack.character.presets.plan_chunks`) one after the other as the graph of
:func:`chunk_graph` (each continuing from the previous chunk's file through ``existing_lora``),
follows each with the websocket (step, total, loss, ETA as :class:`TrainingEvent`) and the HTTP
client, and downloads the last chunk's LoRA into ``loras/`` checked against the sha256 and size
the save node reported.

Resumable like a pack: ``training/v<N>/state.json`` (:mod:`charpack.character.state`) is written
before each post under a prompt id derived from run, chunk and attempt. A process started after
a killed one reattaches to the posted prompt (same prompt id and websocket client id; it is
never posted twice). When the server no longer knows a prompt, or a chunk file it needs is gone
(a restart, a new pod), the training resumes from the last chunk file ``/models/loras`` still
lists, else from the start, and says which (:attr:`TrainingResult.resumed_from`).
It does not pick the dataset (:mod:`charpack.character.dataset`) nor register the LoRA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..comfy.auth import ServerConfig
from ..errors import (
    CharacterError,
)
from ..folder.integrity import PackLock
from .chunks import (  # the training's public names live here too
    DOWNLOAD_FOLDER,
    NO_LORA,
    SAVE_KEY,
    UPLOAD_ROOT,
    TrainingEvent,
    TrainingResult,
    chunk_graph,
)
from .driver import Driver
from .layout import CharacterFolder, slug
from .presets import TrainingSpec, plan_chunks
from .state import (
    ChunkRecord,
    TrainingState,
    dataset_files,
    dataset_hash,
    load_state,
    save_state,
)

__all__ = [
    "DOWNLOAD_FOLDER",
    "NO_LORA",
    "SAVE_KEY",
    "UPLOAD_ROOT",
    "TrainingEvent",
    "TrainingResult",
    "chunk_graph",
    "train_character",
]
log = logging.getLogger(__name__)


def train_character(
    char_dir: Path | str,
    server: ServerConfig,
    *,
    spec: TrainingSpec | None = None,
    dataset_dir: Path | str | None = None,
    checkpoint: str | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    give_up_s: float = 900.0,
    poll_s: float = 5.0,
) -> TrainingResult:
    """Train (or finish training) the character in ``char_dir`` on ``server``.

    ``dataset_dir`` defaults to the latest ``dataset/v<N>``; the training takes that number
    unless ``training/v<N>`` finished already (then the next free one). An unfinished training
    of the same dataset is resumed with its own recorded settings (``spec`` and ``checkpoint``
    are then ignored). ``checkpoint`` defaults to the pack file's ``character.checkpoint``.
    ``give_up_s``: how long an unreachable server is waited for. Raises
    :class:`~charpack.errors.TrainingError` when a chunk fails on the server or the download
    does not match, :class:`~charpack.errors.CharacterError` for a missing dataset,
    :class:`~charpack.errors.ServerUnavailable` when the server stays away.
    """
    folder = CharacterFolder.open(char_dir)
    dataset = _dataset_folder(folder, dataset_dir)
    pairs = dataset_files(dataset)
    digest = dataset_hash(pairs)
    # One training of a character at a time (a killed one's lock is taken over).
    with PackLock.acquire(folder.root / "training"):
        state, resumed = _open_state(folder, dataset, digest, spec, checkpoint, len(pairs))
        driver = Driver(
            folder=folder,
            state=state,
            pairs=pairs,
            server=server,
            on_event=on_event,
            give_up_s=give_up_s,
            poll_s=poll_s,
        )
        return driver.run(resumed)


def _dataset_folder(folder: CharacterFolder, given: Path | str | None) -> Path:
    if given is not None:
        return Path(given).resolve()
    latest = folder.latest("dataset")
    if latest is None:
        raise CharacterError(
            f"{folder.root}: no dataset/v<N> folder — build one first (charpack character "
            "dataset) or pass the dataset folder to train on"
        )
    return folder.dataset(latest)


def _pack_character(folder: CharacterFolder) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(folder.pack_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CharacterError(f"{folder.pack_file}: cannot be read ({exc}); fix the file") from None
    character = raw.get("character") if isinstance(raw, dict) else None
    return character if isinstance(character, dict) else {}


def _open_state(
    folder: CharacterFolder,
    dataset: Path,
    digest: str,
    spec: TrainingSpec | None,
    checkpoint: str | None,
    images: int,
) -> tuple[TrainingState, bool]:
    """The unfinished state of this dataset (resumed: True), else a new version's."""
    for version in reversed(folder.versions("training")):
        found = load_state(folder.training(version))
        if found is not None and found.status != "finished" and found.dataset_hash == digest:
            return found, True
    character = _pack_character(folder)
    name = slug(str(character.get("name") or folder.root.name))
    ckpt = checkpoint or character.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        raise CharacterError(
            f"{folder.pack_file}: no character.checkpoint — set it or pass the checkpoint to "
            "train on"
        )
    shared = _dataset_version(folder, dataset)
    free = (
        shared is not None
        and not folder.training(shared).exists()
        and not folder.lora_file(name, shared).exists()
    )
    version = shared if free and shared is not None else folder.next_version()
    spec = spec or TrainingSpec()
    state = TrainingState(
        version=version,
        character=name,
        dataset=str(dataset),
        dataset_hash=digest,
        upload_folder=f"{UPLOAD_ROOT}/{name}-v{version}-{digest[:8]}",
        checkpoint=ckpt,
        spec=spec.to_json(),
        chunks=[ChunkRecord.planned(c) for c in plan_chunks(spec, images)],
    )
    save_state(folder.training(version), state)
    return state, False


def _dataset_version(folder: CharacterFolder, dataset: Path) -> int | None:
    """N when ``dataset`` is this character's ``dataset/v<N>``."""
    for version in folder.versions("dataset"):
        if folder.dataset(version).resolve() == dataset:
            return version
    return None
